// Every error the REST API answers, as RFC 9457 problem details (application/problem+json). Each
// kind has a stable `type` URI that clients switch on; `title` is fixed per type, `detail` says
// what went wrong this time. openapi.yaml lists the same catalogue (components.schemas.Problem),
// and a test checks that the two agree.

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export const PROBLEMS = {
  'bad-request': { status: 400, title: 'The request is malformed or fails validation' },
  unauthorized: { status: 401, title: 'A valid bearer token is required' },
  forbidden: { status: 403, title: "The token's scope does not allow this" },
  'not-found': { status: 404, title: 'No such resource' },
  conflict: { status: 409, title: 'The request conflicts with the current state' },
  'precondition-failed': { status: 412, title: 'The resource changed since the given ETag' },
  'payload-too-large': { status: 413, title: 'The request body is larger than api.body_limit' },
  'unsupported-media-type': { status: 415, title: 'The request body must be application/json' },
  'invalid-sieve': { status: 422, title: 'The Sieve script does not compile' },
  unprocessable: { status: 422, title: 'The request is well-formed but cannot be carried out' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal error' },
  unavailable: { status: 503, title: 'The state store is unavailable' },
} as const;

export type ProblemKind = keyof typeof PROBLEMS;

export const problemType = (kind: ProblemKind) => `urn:postern:problem:${kind}`;

/** One item of `errors`: a Sieve compile error (line, column) or a field (pointer, RFC 6901). */
export interface ProblemItem {
  message: string;
  line?: number;
  column?: number;
  pointer?: string;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  errors?: ProblemItem[];
}

/** Thrown by handlers; the app's error handler turns it into the response. */
export class ApiProblem extends Error {
  constructor(
    readonly kind: ProblemKind,
    readonly detail?: string,
    readonly extra: { errors?: ProblemItem[]; headers?: Record<string, string> } = {},
  ) {
    super(detail ?? PROBLEMS[kind].title);
    this.name = 'ApiProblem';
  }

  get status(): number {
    return PROBLEMS[this.kind].status;
  }

  body(instance?: string): ProblemBody {
    return {
      type: problemType(this.kind),
      title: PROBLEMS[this.kind].title,
      status: this.status,
      ...(this.detail ? { detail: this.detail } : {}),
      ...(instance ? { instance } : {}),
      ...(this.extra.errors ? { errors: this.extra.errors } : {}),
    };
  }
}

export const notFound = (what: string) => new ApiProblem('not-found', `${what} does not exist`);
