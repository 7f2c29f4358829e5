// The plugin host's engine: runs one stage of the chain (Pipeline in types.ts) over plugins that
// the loader (loader.ts) has validated and initialised.
//
// Contract, per stage:
//   - Hooks run one at a time in chain order; the first decisive verdict (verdict.ts) ends the
//     stage, later plugins do not run. No plugin deciding means `next`.
//   - Each hook gets a deadline (the entry's `timeout`, default DEFAULT_HOOK_TIMEOUT_MS) and an
//     AbortSignal that fires when the deadline passes or the caller's `input.signal` does (client
//     gone). Hooks should pass it to their I/O.
//   - A throw, a timeout, or a malformed verdict (wrong code class, discard at RCPT, …) is a
//     temporary failure: 451 4.3.0 "Policy check unavailable". The client sees only that; the
//     reason goes to the trace `detail` and the log. Never a silent accept (Haraka's lesson).
//     With the entry's `on_error: fail-open` the failure counts as `next` instead.
//   - A hook whose promise settles after the runner moved on (it timed out, or the client went
//     away) is a second resolution: logged as plugin.double_resolution and ignored.
//   - Every hook run appends one TraceEntry; every verdict is logged (plugin.verdict, debug);
//     errors as plugin.error (error) and timeouts as plugin.timeout (warn).
//   - Each plugin's scratch is input.notes.get(<plugin name>), created on first use.
//   - Every hook run is also counted in Prometheus (metrics.ts): its time by plugin and stage,
//     and its verdict (the trace entry's) by plugin, stage and verdict.
// Observers (delivered/deferred/bounced) run in parallel, under the same deadline; their errors
// are logged and swallowed. close() calls each plugin's close(state) once, in reverse chain order.
//
// Config keys read: none directly (the loader passes each entry's `timeout` and `on_error`).
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Directory } from '../directory/directory.js';
import type { Resolver } from '../dns/resolver.js';
import type { Store } from '../store/store.js';
import { logEvent } from '../log/logger.js';
import type { DeliveryEvent, Hook, HookContext, Observer, ObserverStage, PluginDefinition, Stage } from './plugin.js';
import { STAGES } from './plugin.js';
import type { Pipeline, StageInput, StageResult, TraceEntry } from './types.js';
import { next, tempfail, type Verdict } from './verdict.js';
import { recordHook } from './metrics.js';

/** Per-hook deadline when the entry sets no `timeout`. Long enough for a DNS retry or a spamd scan. */
export const DEFAULT_HOOK_TIMEOUT_MS = 10_000;

/** A plugin definition with its types erased, as the runner holds it. */
export type AnyPluginDefinition = PluginDefinition<z.ZodType, unknown>;

/** One entry of the chain, validated and initialised (loader.ts builds these). */
export interface LoadedPlugin {
  /** Name used in the trace, the log and as the notes key. */
  name: string;
  def: AnyPluginDefinition;
  /** The plugin's options as its schema parsed them (runner-only keys removed). */
  config: unknown;
  /** What init returned. */
  state: unknown;
  timeoutMs: number;
  onError: 'tempfail' | 'fail-open';
}

export interface PipelineDeps {
  store: Store;
  directory: Directory;
  dns: Resolver;
  log: Logger;
}

/** The reply for a failed hook; the client never learns more than this (maddy's split). */
export const policyUnavailable = (): Verdict => tempfail('4.3.0', 'Policy check unavailable', 451);

type Outcome = { kind: 'verdict'; verdict: Verdict } | { kind: 'error'; error: unknown } | { kind: 'timeout' } | { kind: 'aborted' };

export function createPipeline(plugins: LoadedPlugin[], deps: PipelineDeps): Pipeline {
  const logs = new Map(plugins.map((p) => [p.name, deps.log.child({ plugin: p.name })]));
  const stagesWithHooks = new Set<Stage>(STAGES.filter((s) => plugins.some((p) => typeof p.def.hooks[s] === 'function')));
  let closing: Promise<void> | null = null;

  async function run(stage: Stage, input: StageInput): Promise<StageResult> {
    if (closing) throw new Error('pipeline is closed');
    const trace: TraceEntry[] = [];
    const rcpt = stage === 'rcpt' ? input.rcpt?.address : undefined;
    for (const p of plugins) {
      const hook = p.def.hooks[stage] as Hook<unknown, unknown> | undefined;
      if (typeof hook !== 'function') continue;
      // The per-session child logger is made only when something logs through it: most hooks of
      // a busy gateway log nothing at the configured level, and a child per hook run is a cost.
      const pluginLog = logs.get(p.name)!;
      let child: Logger | undefined;
      const log = (): Logger => (child ??= pluginLog.child({ sid: input.session.id }));
      let notes = input.notes.get(p.name);
      if (!notes) input.notes.set(p.name, (notes = {}));

      const started = performance.now();
      const own: TraceEntry[] = [];
      // ctx.log and ctx.signal are made on first read; a plugin may still replace either (a plain
      // field before), so each getter has a setter.
      const outcome = await invoke(p, stage, hook, log, input.signal, (signal) => {
        let ownLog: Logger | undefined;
        let ownSignal: AbortSignal | undefined;
        return {
          get log() {
            return ownLog ?? log();
          },
          set log(v: Logger) {
            ownLog = v;
          },
          get signal() {
            return ownSignal ?? signal();
          },
          set signal(v: AbortSignal) {
            ownSignal = v;
          },
          plugin: p.name,
          config: p.config,
          state: p.state,
          session: input.session,
          tx: input.tx,
          rcpt: input.rcpt,
          auth: input.auth,
          message: input.message,
          notes: notes!,
          dns: deps.dns,
          store: deps.store,
          directory: deps.directory,
          trace: (e) => own.push({ stage, plugin: p.name, ms: 0, ...(rcpt !== undefined ? { rcpt } : {}), ...e }),
        };
      });
      const ms = Math.round((performance.now() - started) * 100) / 100;
      const base = { stage, plugin: p.name, ms, ...(rcpt !== undefined ? { rcpt } : {}) };
      // The plugin's own entries (rules that acted) come before the hook's; a late one is dropped.
      trace.push(...own.splice(0));

      if (outcome.kind === 'verdict') {
        const v = outcome.verdict;
        const entry: TraceEntry = { ...base, verdict: v.kind, ...describe(v) };
        trace.push(entry);
        recordHook(input, p.name, stage, v.kind, ms);
        if (pluginLog.isLevelEnabled('debug')) logEvent(log(), 'debug', 'plugin.verdict', { stage, verdict: v.kind, code: entry.code, enhanced: entry.enhanced, ms, rcpt }, entry.detail);
        if (v.kind !== 'next') return { verdict: v, trace };
        continue;
      }

      // Failure: the client went away, the hook threw, timed out, or answered nonsense.
      const failed = policyUnavailable() as Extract<Verdict, { kind: 'tempfail' }>;
      const reason =
        outcome.kind === 'timeout'
          ? `timed out after ${p.timeoutMs}ms`
          : outcome.kind === 'aborted'
            ? 'aborted: the client went away'
            : errorText(outcome.error);
      const failOpen = p.onError === 'fail-open' && outcome.kind !== 'aborted';
      recordHook(input, p.name, stage, outcome.kind === 'timeout' ? 'timeout' : 'error', ms);
      trace.push({
        ...base,
        verdict: outcome.kind === 'timeout' ? 'timeout' : 'error',
        code: failOpen ? undefined : failed.code,
        enhanced: failOpen ? undefined : failed.enhanced,
        detail: failOpen ? `${reason} (on_error: fail-open)` : reason,
      });
      if (outcome.kind === 'timeout') {
        logEvent(log(), 'warn', 'plugin.timeout', { stage, ms, timeout: p.timeoutMs, failOpen, rcpt }, reason);
      } else if (outcome.kind === 'aborted') {
        logEvent(log(), 'info', 'plugin.error', { stage, ms, rcpt }, reason);
      } else {
        logEvent(log(), 'error', 'plugin.error', { stage, ms, failOpen, rcpt, err: outcome.error }, reason);
      }
      if (failOpen) continue;
      return { verdict: failed, trace };
    }
    return { verdict: next(), trace };
  }

  /**
   * Runs one hook under its deadline. Resolves with the first of: the hook's verdict or throw,
   * the deadline, the caller's abort. A hook settling after that is logged and ignored.
   */
  async function invoke(
    p: LoadedPlugin,
    stage: Stage,
    hook: Hook<unknown, unknown>,
    log: () => Logger,
    outer: AbortSignal | undefined,
    makeCtx: (signal: () => AbortSignal) => HookContext<unknown, unknown>,
  ): Promise<Outcome> {
    if (outer?.aborted) return { kind: 'aborted' };
    // One controller per hook, fed by the deadline and by the caller's signal; the listener on the
    // caller's (long-lived) signal is removed when the hook is done, so nothing accumulates. The
    // controller is made when the hook first reads ctx.signal (most hooks never do); one made
    // after the deadline or the caller's abort starts out aborted with the same reason.
    let ctl: AbortController | undefined;
    let aborted: { reason: unknown } | undefined;
    const abort = (reason: unknown) => {
      aborted ??= { reason };
      ctl?.abort(reason);
    };
    const signal = (): AbortSignal => {
      if (!ctl) {
        ctl = new AbortController();
        if (aborted) ctl.abort(aborted.reason);
      }
      return ctl.signal;
    };
    let timer: NodeJS.Timeout | undefined;
    let onOuter: (() => void) | undefined;
    const stop = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => {
        abort(new HookTimeoutError(p.name, stage, p.timeoutMs));
        resolve({ kind: 'timeout' });
      }, p.timeoutMs);
      if (outer) {
        onOuter = () => {
          abort(outer.reason);
          resolve({ kind: 'aborted' });
        };
        outer.addEventListener('abort', onOuter, { once: true });
      }
    });
    let done = false;
    // `new Promise(r => r(hook(ctx)))` also catches a synchronous throw from a non-async hook.
    const fromHook = new Promise<Verdict>((resolve) => resolve(hook(makeCtx(signal)))).then(
      (verdict): Outcome => {
        const problem = checkVerdict(verdict, stage);
        return problem ? { kind: 'error', error: new Error(`invalid verdict: ${problem}`) } : { kind: 'verdict', verdict };
      },
      (error: unknown): Outcome => ({ kind: 'error', error }),
    );
    try {
      const first = await Promise.race([fromHook, stop]);
      done = true;
      return first;
    } finally {
      clearTimeout(timer);
      if (outer && onOuter) outer.removeEventListener('abort', onOuter);
      void fromHook.then((late) => {
        // The race was lost by the hook: whatever it says now comes too late.
        if (done && (aborted || outer?.aborted)) {
          const what = late.kind === 'verdict' ? late.verdict.kind : late.kind === 'error' ? `error: ${errorText(late.error)}` : late.kind;
          logEvent(log(), 'warn', 'plugin.double_resolution', { stage, late: what }, 'hook settled after the runner moved on; ignored');
        }
      });
    }
  }

  async function observe(stage: ObserverStage, ev: DeliveryEvent): Promise<void> {
    await Promise.all(
      plugins.map(async (p) => {
        const fn = p.def.hooks[stage] as Observer<unknown, unknown> | undefined;
        if (typeof fn !== 'function') return;
        const log = logs.get(p.name)!;
        let timer: NodeJS.Timeout | undefined;
        try {
          const deadline = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new HookTimeoutError(p.name, stage, p.timeoutMs)), p.timeoutMs);
          });
          const call = new Promise<void>((resolve) => resolve(fn(ev, { config: p.config, state: p.state, log, store: deps.store })));
          call.catch(() => {}); // a late rejection after the deadline is not unhandled
          await Promise.race([call, deadline]);
        } catch (e) {
          const timeout = e instanceof HookTimeoutError;
          logEvent(log, timeout ? 'warn' : 'error', timeout ? 'plugin.timeout' : 'plugin.error', { stage, qid: ev.queueId, err: timeout ? undefined : e }, errorText(e));
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  }

  return {
    names: plugins.map((p) => p.name),
    has: (stage) => stagesWithHooks.has(stage),
    run,
    observe,
    close() {
      closing ??= (async () => {
        for (const p of [...plugins].reverse()) {
          if (!p.def.close) continue;
          try {
            await p.def.close(p.state);
          } catch (e) {
            logEvent(logs.get(p.name)!, 'error', 'plugin.error', { stage: 'close', err: e }, errorText(e));
          }
        }
      })();
      return closing;
    },
  };
}

export class HookTimeoutError extends Error {
  constructor(
    readonly plugin: string,
    readonly stage: string,
    readonly timeoutMs: number,
  ) {
    super(`plugin ${plugin}: ${stage} hook timed out after ${timeoutMs}ms`);
    this.name = 'HookTimeoutError';
  }
}

/** Trace fields for a verdict. */
function describe(v: Verdict): Pick<TraceEntry, 'code' | 'enhanced' | 'detail'> {
  switch (v.kind) {
    case 'reject':
    case 'tempfail':
      return { code: v.code, enhanced: v.enhanced, detail: v.text };
    case 'discard':
      return v.reason ? { detail: v.reason } : {};
    case 'quarantine':
      return { detail: v.reason ? `${v.folder}: ${v.reason}` : v.folder };
    case 'reroute':
      return v.reason ? { detail: v.reason } : {};
    default:
      return {};
  }
}

const ENHANCED = /^([245])\.\d{1,3}\.\d{1,3}$/;

/**
 * Why a verdict is unusable, or null. The reply code and the enhanced code must agree in class
 * (RFC 3463 §2: the class digit of the enhanced code matches the reply's first digit), a reject
 * is 5yz and a tempfail 4yz (RFC 5321 §4.2.1), text is one line (a CR/LF would end the reply
 * early), and discard/quarantine only make sense once there is a message.
 */
export function checkVerdict(v: unknown, stage: Stage): string | null {
  if (typeof v !== 'object' || v === null || typeof (v as { kind?: unknown }).kind !== 'string') return 'not a verdict object';
  const verdict = v as Verdict;
  switch (verdict.kind) {
    case 'next':
    case 'accept':
      return null;
    case 'reject':
    case 'tempfail': {
      const cls = verdict.kind === 'reject' ? 5 : 4;
      if (!Number.isInteger(verdict.code) || Math.floor(verdict.code / 100) !== cls || verdict.code % 100 > 59) return `${verdict.kind} with reply code ${String(verdict.code)}`;
      const m = ENHANCED.exec(String(verdict.enhanced));
      if (!m || Number(m[1]) !== cls) return `${verdict.kind} ${verdict.code} with enhanced code ${String(verdict.enhanced)}`;
      if (typeof verdict.text !== 'string' || /[\r\n]/.test(verdict.text)) return `${verdict.kind} text must be a single line`;
      return null;
    }
    case 'discard':
    case 'quarantine':
      if (stage !== 'data' && stage !== 'queue') return `${verdict.kind} at the ${stage} stage (only data and queue)`;
      if (verdict.kind === 'quarantine' && (typeof verdict.folder !== 'string' || verdict.folder === '')) return 'quarantine without a folder';
      return null;
    case 'reroute': {
      if (stage !== 'data' && stage !== 'queue') return `reroute at the ${stage} stage (only data and queue)`;
      const plan = verdict.plan ?? {};
      if (typeof plan !== 'object' || Object.values(plan).some((f) => !Array.isArray(f) || f.some((x) => typeof x !== 'string' || x === ''))) return 'reroute with a bad plan';
      if (verdict.redirect !== undefined && (!Array.isArray(verdict.redirect) || verdict.redirect.some((a) => typeof a !== 'string' || !a.includes('@')))) return 'reroute with a bad redirect list';
      for (const r of Object.values(verdict.refuse ?? {})) {
        const problem = checkVerdict({ kind: 'reject', ...r }, stage);
        if (problem) return `reroute refusing a recipient: ${problem}`;
      }
      for (const edits of Object.values(verdict.copies ?? {})) {
        if (!Array.isArray(edits) || edits.some((e) => (e.op !== 'add' && e.op !== 'remove') || typeof e.name !== 'string' || (e.op === 'add' && (typeof e.value !== 'string' || /[\r\n]/.test(e.value))))) return 'reroute with bad header edits for a copy';
      }
      return null;
    }
    default:
      return `unknown verdict kind ${JSON.stringify((verdict as { kind: string }).kind)}`;
  }
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return typeof e === 'string' ? e : JSON.stringify(e) ?? String(e);
}
