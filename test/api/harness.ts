// The REST API in-process for tests: a real plugin chain (relay-acl, sieve), a real directory, an
// in-memory store, and every response checked against openapi.yaml (status listed for the
// operation, body valid against its schema with ajv) before the test sees it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import type { FastifyInstance } from 'fastify';
import { buildApi, openapiPath, type BuiltApi } from '../../src/api/app.js';
import { fromObject } from '../../src/config/load.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createDirectory } from '../../src/directory/index.js';
import { loadPipeline } from '../../src/pipeline/loader.js';
import { unconfiguredResolver } from '../../src/pipeline/harness.js';
import { silentLogger } from '../../src/log/logger.js';
import type { Store } from '../../src/store/store.js';

export const ADMIN = 'admin-token-0123456789';
export const WRITER = 'write-token-0123456789';
export const READER = 'read-token-01234567890';

type Spec = { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> } & Record<string, unknown>;
export const spec = parseYaml(readFileSync(openapiPath(), 'utf8')) as Spec;

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => void;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(spec, 'openapi');

const esc = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** The spec path template a concrete path matches; static segments win over parameters. */
export function matchPath(path: string): string | null {
  const candidates = Object.keys(spec.paths).filter((t) => new RegExp(`^${t.replace(/[.+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path));
  candidates.sort((a, b) => (a.match(/\{/g)?.length ?? 0) - (b.match(/\{/g)?.length ?? 0));
  return candidates[0] ?? null;
}

/** Responses seen, as "METHOD template status", for the coverage check. */
export const seen = new Set<string>();

/** Asserts that one response is what the spec says the operation answers. */
export function checkResponse(method: string, path: string, status: number, contentType: string | undefined, body: string): void {
  const template = matchPath(path);
  assert.ok(template, `${method} ${path}: no such path in openapi.yaml`);
  const op = spec.paths[template]![method.toLowerCase()];
  assert.ok(op, `${method} ${template}: no such operation in openapi.yaml`);
  let pointer = `#/paths/${esc(template)}/${method.toLowerCase()}/responses/${status}`;
  let response = op.responses[String(status)] as { $ref?: string; content?: Record<string, unknown> } | undefined;
  assert.ok(response, `${method} ${template}: status ${status} is not in openapi.yaml (body: ${body.slice(0, 300)})`);
  if (response.$ref) {
    pointer = response.$ref;
    const parts = response.$ref.slice(2).split('/');
    response = parts.reduce<Record<string, unknown>>((o, k) => o[k] as Record<string, unknown>, spec) as typeof response;
  }
  seen.add(`${method} ${template} ${status}`);
  if (!response!.content) {
    assert.equal(body, '', `${method} ${template} ${status}: the spec has no body, got ${body.slice(0, 200)}`);
    return;
  }
  const mediaType = (contentType ?? '').split(';')[0]!.trim();
  assert.ok(mediaType in response!.content, `${method} ${template} ${status}: content type ${mediaType} not in the spec (${Object.keys(response!.content).join(', ')})`);
  if (!mediaType.includes('json')) return;
  const validate = ajv.getSchema(`openapi${pointer}/content/${esc(mediaType)}/schema`) ?? ajv.compile({ $ref: `openapi${pointer}/content/${esc(mediaType)}/schema` });
  const data = JSON.parse(body) as unknown;
  assert.ok(validate(data), `${method} ${template} ${status}: body does not match the spec: ${ajv.errorsText(validate.errors)}\n${body.slice(0, 500)}`);
}

export interface ApiCall {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  token?: string | null;
  body?: unknown;
  headers?: Record<string, string>;
  /** A raw payload instead of JSON (content-type from headers). */
  payload?: string;
}

export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
  json: <T = Record<string, unknown>>() => T;
}

export interface TestApi extends BuiltApi {
  store: Store;
  call(c: ApiCall): Promise<ApiAnswer>;
  close(): Promise<void>;
}

export async function startApi(overrides: Record<string, unknown> = {}, opts: { store?: Store } = {}): Promise<TestApi> {
  const config = fromObject(
    {
      hostname: 'mx.example.test',
      domains: { local: ['example.test'] },
      relay: { networks: ['127.0.0.0/8'] },
      plugins: ['relay-acl', 'sieve'],
      api: {
        tokens: [
          { name: 'admin', token: ADMIN, scope: 'admin' },
          { name: 'writer', token: WRITER, scopes: ['write'] },
          { name: 'reader', token: READER, scope: 'read' },
        ],
      },
      ...overrides,
    },
    null,
  );
  const store = opts.store ?? createMemoryStore();
  const log = silentLogger();
  const directory = createDirectory({ store, localDomains: config.domains.local, log });
  const pipeline = await loadPipeline(config, { store, directory, dns: unconfiguredResolver(), log });
  const built = await buildApi({ config, store, directory, pipeline, log });
  return {
    ...built,
    store,
    call: (c) => call(built.app, c),
    async close() {
      await built.app.close();
      await pipeline.close();
      if (!opts.store) await store.close();
    },
  };
}

export async function call(app: FastifyInstance, c: ApiCall): Promise<ApiAnswer> {
  const token = c.token === undefined ? ADMIN : c.token;
  const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(c.headers ?? {}) };
  const r = await app.inject({
    method: c.method ?? 'GET',
    url: c.url,
    headers: c.body !== undefined ? { 'content-type': 'application/json', ...headers } : headers,
    ...(c.payload !== undefined ? { payload: c.payload } : c.body !== undefined ? { payload: JSON.stringify(c.body) } : {}),
  });
  checkResponse(c.method ?? 'GET', c.url.split('?')[0]!, r.statusCode, r.headers['content-type'] as string | undefined, r.body);
  return { status: r.statusCode, headers: r.headers, body: r.body, json: <T,>() => JSON.parse(r.body) as T };
}

/** Asserts a problem answer: status, stable type, problem+json. */
export function assertProblem(r: ApiAnswer, status: number, kind: string): Record<string, unknown> {
  assert.equal(r.status, status, r.body);
  assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
  const p = r.json();
  assert.equal(p.type, `urn:postern:problem:${kind}`);
  assert.equal(p.status, status);
  return p;
}

/** An answer of `daemonApi`: the status and the JSON body. */
export interface DaemonAnswer {
  status: number;
  json<T = Record<string, unknown>>(): T;
}

/**
 * A REST client for a running daemon (its `api` listener) with one bearer token; every answer
 * is checked against openapi.yaml, as the in-process harness checks its own.
 */
export function daemonApi(apiPort: number, token: string): (method: string, path: string, body?: unknown) => Promise<DaemonAnswer> {
  return async (method, path, body) => {
    const r = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    checkResponse(method, path, r.status, r.headers.get('content-type') ?? undefined, text);
    return { status: r.status, json: <T,>() => JSON.parse(text) as T };
  };
}
