// The user directory: local users with password hashes, aliases (one address to many, local or
// remote), a catch-all per domain, and subaddressing (user+tag@ → user, RFC 5233). Backed by the
// Store, so `postern user add` in another process takes effect in a running daemon.

export interface User {
  /** Canonical address, lower-case domain: "alice@example.test". */
  address: string;
  /** Encoded hash ("scrypt$N$r$p$salt$hash"); never logged. */
  passwordHash?: string;
  createdAt: number;
}

/** What a recipient address resolves to, after aliases, catch-all and subaddress handling. */
export type Resolution =
  /** A local mailbox; `detail` is the +tag part when subaddressing applied. */
  | { kind: 'local'; user: string; detail?: string }
  /** An alias or catch-all expanding to these targets (each local or remote, already resolved one level). */
  | { kind: 'alias'; targets: string[] }
  /** A local domain but no such user, alias or catch-all: 550 5.1.1 at RCPT. */
  | { kind: 'unknown' }
  /** Not one of our local domains. */
  | { kind: 'foreign' };

export interface Directory {
  /** Resolves a recipient fully: aliases expand recursively (loop-safe) into local users and remote addresses. */
  expand(address: string): Promise<{ local: { user: string; address: string; detail?: string }[]; remote: string[] } | null>;
  /** One step of resolution (for RCPT checks): null result never; see Resolution. */
  resolve(address: string): Promise<Resolution>;
  /** Checks a password; returns the canonical user address on success. Constant work on failure. */
  authenticate(username: string, password: string): Promise<string | null>;
  isLocalDomain(domain: string): boolean;

  getUser(address: string): Promise<User | null>;
  listUsers(): Promise<User[]>;
  addUser(address: string, password?: string): Promise<User>;
  setPassword(address: string, password: string): Promise<void>;
  deleteUser(address: string): Promise<boolean>;

  setAlias(address: string, targets: string[]): Promise<void>;
  deleteAlias(address: string): Promise<boolean>;
  /** Catch-all for a domain: every unknown local part goes to `target`. */
  setCatchAll(domain: string, target: string | null): Promise<void>;
}
