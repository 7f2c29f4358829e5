// The files of the sieve plugin's `scripts` as the API needs them: plugins/sieve runs them before
// the store rules, so a store rule is decided at RCPT (stage rcpt, sieve/rule-order.ts) only when
// every one of them asks only envelope questions too (sieve/analyze.ts). The API reads them for
// that one answer, so the stage it reports is the one the plugin runs a rule at. Like the plugin,
// it stats them at most once a second and compiles a file again when its mtime or size changed;
// a file that cannot be read or does not compile keeps its last answer (the plugin keeps running
// its last good version), and counts as reading the message until it has one.
//
// Config keys read: `plugins` (the first `sieve` entry's `scripts`), `baseDir`, `sieve.limits`.
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Config } from '../config/load.js';
import { asksOnlyEnvelope } from '../sieve/analyze.js';
import { compile, type CompileOptions } from '../sieve/compile.js';
import { compileOptions } from '../sieve/config.js';

const STAT_INTERVAL_MS = 1000;

interface GatewayFile {
  path: string;
  /** mtime and size when last read; undefined before the first good read. */
  version?: string;
  envelopeOnly: boolean;
}

export class GatewayFiles {
  private readonly files: GatewayFile[];
  private checkedAt = Number.NEGATIVE_INFINITY;
  private refreshing: Promise<void> = Promise.resolve();

  constructor(
    paths: string[],
    private readonly compileWith: CompileOptions,
  ) {
    this.files = paths.map((path) => ({ path, envelopeOnly: false }));
  }

  /** The files of the config's sieve plugin entry (none without one). */
  static fromConfig(config: Pick<Config, 'plugins' | 'baseDir' | 'sieve'>): GatewayFiles {
    return new GatewayFiles(sieveScripts(config).map((p) => resolve(config.baseDir, p)), compileOptions(config.sieve));
  }

  /** True when every file can be decided at RCPT (so when there is none). */
  async allEnvelopeOnly(): Promise<boolean> {
    if (this.files.length === 0) return true;
    if (Date.now() - this.checkedAt >= STAT_INTERVAL_MS) {
      this.checkedAt = Date.now();
      this.refreshing = Promise.all(this.files.map((f) => this.refresh(f))).then(() => undefined);
    }
    // A call made while the files are being read waits for that read, not for the next one.
    await this.refreshing;
    return this.files.every((f) => f.envelopeOnly);
  }

  private async refresh(f: GatewayFile): Promise<void> {
    try {
      const st = await stat(f.path);
      const version = `${st.mtimeMs}:${st.size}`;
      if (version === f.version) return;
      const r = compile(await readFile(f.path, 'utf8'), this.compileWith);
      f.version = version;
      if (r.ok) f.envelopeOnly = asksOnlyEnvelope(r.script);
    } catch {
      /* unreadable: the last answer stands */
    }
  }
}

/** `scripts` of the first `sieve` entry of `plugins`, as written (relative to the config file). */
function sieveScripts(config: Pick<Config, 'plugins'>): string[] {
  for (const entry of config.plugins ?? []) {
    if (entry === 'sieve') return [];
    if (typeof entry === 'object' && 'sieve' in entry) {
      const scripts = (entry.sieve as { scripts?: unknown } | null)?.scripts;
      return Array.isArray(scripts) ? scripts.filter((s): s is string => typeof s === 'string') : [];
    }
  }
  return [];
}
