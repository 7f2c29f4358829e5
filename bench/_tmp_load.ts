import { runLoad, makeMessage, percentile } from './smtp-load.js';
const body = makeMessage(10240, 's@remote.example', 'user0@example.test');
const t = Date.now();
const r = await runLoad({ host: '127.0.0.1', port: 2626, connections: 20, messages: 4000, from: 's@remote.example', to: (i) => `user${i % 10}@example.test`, body });
console.log(JSON.stringify({ rate: r.sent / (r.wallMs / 1000), p50: percentile(r.latenciesMs, 50), p99: percentile(r.latenciesMs, 99), failed: r.failed, errors: r.errors }));
