// The user directory: the Directory contract (directory.ts) and its store-backed implementation
// (store-directory.ts), with scrypt password hashing (password.ts).
// Config keys read: `domains.local` (passed to createDirectory as localDomains).
export type { Directory, Resolution, User } from './directory.js';
export { canonicalAddress, createDirectory, DirectoryError, DIRECTORY_CHANNEL, StoreDirectory, type DirectoryErrorCode, type DirectoryOptions, type ExpandResult } from './store-directory.js';
export { hashPassword, verifyPassword, DEFAULT_SCRYPT, type ScryptParams } from './password.js';
