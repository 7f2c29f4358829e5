#!/usr/bin/env node
// The CLI entry (the `postern` bin is bin/postern.cjs, which loads dist/src/cli.js; `npm run postern --` runs it from
// source). Commands and exit codes: src/cli/main.ts and CONTRACT.md.
//
// The exit code is set rather than forced, so piped output is flushed first. Once `start` has
// returned, an unref'd timer still forces the exit in case some handle is left open: soon after
// a clean stop, at once after a second signal.
import { main } from './cli/main.js';
import { processIo } from './cli/io.js';

const argv = process.argv.slice(2);
// `postern queue list | head -1`: the reader went away, so the rest of the output has nowhere
// to go. It is dropped, and the command finishes as it would have (its exit code, its clean-up)
// instead of dying with an EPIPE stack trace. (The daemon's log stream is left alone.)
if (argv[0] !== 'start') {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
  });
}
const code = await main(argv, processIo());
process.exitCode = code;
if (argv[0] === 'start') setTimeout(() => process.exit(code), code === 0 ? 3000 : 100).unref();
