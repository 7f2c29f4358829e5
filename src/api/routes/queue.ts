// /v1/queue: the messages the daemon holds in its spool (the queue manager's own view, as
// `postern queue` has it), with the operations the CLI uses: retry now, delete without notice,
// bounce (fail the open recipients and send the sender a DSN).
//   GET /v1/queue?state=deferred&domain=example.org&sender=a@b&min_age=3600
//   state: a recipient in that state (pending, deferred, held, done, failed); domain: a
//   recipient in that domain; sender: the envelope sender (case-insensitive); min_age: seconds
//   since the message arrived.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Envelope } from '../../queue/envelope.js';
import type { TargetState } from '../../queue/manager.js';
import { isQueueId } from '../../queue/queue-id.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const STATES = ['pending', 'deferred', 'held', 'done', 'failed'] as const;
const listQuery = z
  .object({
    state: z.enum(STATES).optional(),
    domain: z.string().min(1).max(253).optional(),
    sender: z.string().max(320).optional(),
    min_age: z.coerce.number().int().min(0).optional(),
    limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  })
  .strict();
const idParam = z.object({ id: z.string().refine(isQueueId, 'not a queue id') });

interface QueuedMessage {
  id: string;
  received_at: string;
  sender: string;
  recipients: { address: string; status: (typeof STATES)[number]; attempts: number; next_attempt?: string; last?: string; destination?: string }[];
}

function view(e: { id: string; envelope: Envelope; targets: TargetState[] | null }): QueuedMessage {
  const recipients = e.targets
    ? e.targets.map((t) => ({
        address: t.address ?? t.rcpt,
        status: t.status,
        attempts: t.attempts,
        ...(t.status === 'deferred' && t.next ? { next_attempt: new Date(t.next).toISOString() } : {}),
        ...(t.last ? { last: t.last } : {}),
        ...(t.kind === 'local' ? { destination: `local:${t.user}${t.folder ? `/${t.folder}` : ''}` } : t.domain ? { destination: `remote:${t.domain}` } : {}),
      }))
    : e.envelope.recipients.map((r) => ({ address: r.address, status: 'pending' as const, attempts: 0 }));
  return { id: e.id, received_at: new Date(e.envelope.receivedAt).toISOString(), sender: e.envelope.mailFrom, recipients };
}

const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();

export function registerQueueRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const queue = () => {
    if (!ctx.queue) throw new ApiProblem('unprocessable', 'this API instance has no queue');
    return ctx.queue;
  };
  const find = (id: string) => {
    const e = queue().entries().find((x) => x.id === id);
    return e ? view(e) : null;
  };
  const one = (req: FastifyRequest) => parseInput(idParam, req.params, 'path').id;

  app.get('/v1/queue', { config: { scope: 'read' } }, async (req, reply) => {
    const q = parseInput(listQuery, req.query, 'query');
    const now = Date.now();
    const messages = queue()
      .entries()
      .map(view)
      .filter((m) => !q.state || m.recipients.some((r) => r.status === q.state))
      .filter((m) => !q.domain || m.recipients.some((r) => domainOf(r.address) === q.domain!.toLowerCase()))
      .filter((m) => q.sender === undefined || m.sender.toLowerCase() === q.sender.toLowerCase())
      .filter((m) => q.min_age === undefined || now - Date.parse(m.received_at) >= q.min_age * 1000)
      .sort((a, b) => a.received_at.localeCompare(b.received_at) || a.id.localeCompare(b.id))
      .slice(0, q.limit);
    return withEtag(reply, { messages });
  });

  app.get('/v1/queue/:id', { config: { scope: 'read' } }, async (req, reply) => {
    const id = one(req);
    const m = find(id);
    if (!m) throw notFound(`queued message ${id}`);
    return withEtag(reply, m);
  });

  app.post('/v1/queue/:id/retry', { config: { scope: 'write' } }, async (req) => {
    const id = one(req);
    const before = find(id);
    if (!before) throw notFound(`queued message ${id}`);
    const count = await queue().retry(id);
    await ctx.audit.record({ token: who(req), action: 'queue.retry', method: req.method, path: req.url, resource: `queue/${id}`, before, after: find(id) });
    return { id, retried: count > 0 };
  });

  app.post('/v1/queue/:id/bounce', { config: { scope: 'write' } }, async (req) => {
    const id = one(req);
    const before = find(id);
    if (!before) throw notFound(`queued message ${id}`);
    if (!(await queue().bounce(id))) throw notFound(`queued message ${id}`);
    await ctx.audit.record({ token: who(req), action: 'queue.bounce', method: req.method, path: req.url, resource: `queue/${id}`, before, after: find(id) });
    return { id, bounced: true };
  });

  app.delete('/v1/queue/:id', { config: { scope: 'write' } }, async (req, reply) => {
    const id = one(req);
    const before = find(id);
    checkPreconditions(req, before ? etagOf(before) : null);
    if (!before || !(await queue().remove(id))) throw notFound(`queued message ${id}`);
    await ctx.audit.record({ token: who(req), action: 'queue.delete', method: req.method, path: req.url, resource: `queue/${id}`, before, after: null });
    return reply.code(204).send();
  });
}
