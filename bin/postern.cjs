#!/usr/bin/env node
// The `postern` bin. A CommonJS file on purpose: Node loads it synchronously, so the line below
// runs before anything starts libuv's thread pool (the ES module loader reads files through it).
// Every fsync holds a pool thread for its whole duration; with the default 4 threads, four slow
// fsyncs stall all other file and DNS work. An operator's own UV_THREADPOOL_SIZE wins.
process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/src/cli.js').catch((err) => {
  console.error(err);
  process.exit(1);
});
