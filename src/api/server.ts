// The `api` listener (listen.api, default 127.0.0.1:8025): the REST API app (app.ts) on a plain
// HTTP socket, started and stopped by the daemon like the mail listeners.
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from './context.js';
import { buildApi } from './app.js';

export function createApiListener(deps: ApiDeps): { name: string; listen(): Promise<{ port: number }>; close(): Promise<void> } {
  let app: FastifyInstance | null = null;
  return {
    name: 'api',
    async listen() {
      const where = deps.config.listen.api;
      if (!where) throw new Error('listen.api is not configured');
      app = (await buildApi(deps)).app;
      await app.listen({ host: where.host, port: where.port });
      const addr = app.server.address();
      return { port: typeof addr === 'object' && addr ? addr.port : where.port };
    },
    async close() {
      await app?.close();
    },
  };
}
