#!/usr/bin/env node
// `node dist/cli.js …` after the build (CONTRACT.md): the same CLI as the `postern` bin, whose
// code the build puts under dist/src/. The bin (bin/postern.cjs) also widens libuv's thread pool
// before anything starts it; an ES module entry such as this one cannot (the loader has started
// the pool by the time it runs), so here UV_THREADPOOL_SIZE comes from the environment.
import './src/cli.js';
