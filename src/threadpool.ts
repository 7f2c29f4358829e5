// Imported first by the bin: sizes libuv's thread pool before any file-system call starts it.
// Every fsync holds one pool thread for its whole duration, and the default of 4 threads would
// let four slow fsyncs stall all other file and DNS work. An operator's own setting wins.
process.env.UV_THREADPOOL_SIZE ??= '16';
export {};
