// Stage, position and activation of the admin (gateway) Sieve rules. The REST API writes them
// (src/api/rules-repository.ts) to the store hash `sieve:rules:meta` (rule name → JSON RuleMeta),
// next to the scripts in `sieve:rules`; plugins/sieve reads both and runs the rules in the order
// given here. Pure functions: no store, no compiler (the caller says which scripts are
// envelope-only, see sieve/analyze.ts).
//
// Stages, in the order they run at DATA:
//   rcpt  the rule asks only envelope questions, so it also runs at RCPT, before the message
//         exists, and a reject there refuses that recipient (550 5.7.1 at RCPT);
//   data  the rule runs once the message is in, at DATA.
// Within a stage rules run by `position` (1, 2, …, dense after every change). A rule without
// metadata (written into the store by hand, or before metadata existed) is active, at stage rcpt
// when its script asks only envelope questions and data otherwise, after the positioned rules of
// its stage, in name order. Inactive rules keep their place but do not run.

export const RULE_STAGES = ['rcpt', 'data'] as const;
export type RuleStage = (typeof RULE_STAGES)[number];

export interface RuleMeta {
  stage: RuleStage;
  /** 1-based place within the stage. */
  position: number;
  active: boolean;
}

export interface OrderedRule extends RuleMeta {
  name: string;
  script: string;
}

/** Reads one field of `sieve:rules:meta`; anything malformed counts as absent (defaults apply). */
export function parseMeta(raw: string | null | undefined): Partial<RuleMeta> {
  if (!raw) return {};
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    return {
      ...(v.stage === 'rcpt' || v.stage === 'data' ? { stage: v.stage } : {}),
      ...(typeof v.position === 'number' && Number.isFinite(v.position) ? { position: v.position } : {}),
      ...(typeof v.active === 'boolean' ? { active: v.active } : {}),
    };
  } catch {
    return {};
  }
}

export const serializeMeta = (m: RuleMeta): string => JSON.stringify({ stage: m.stage, position: m.position, active: m.active });

/**
 * Every rule with its metadata resolved (defaults filled in, positions renumbered 1..n per
 * stage), in run order: stage rcpt first, then data; by position, then name, within each.
 */
export function orderRules(scripts: Record<string, string>, meta: Record<string, Partial<RuleMeta> | undefined>, envelopeOnly: (name: string, script: string) => boolean): OrderedRule[] {
  const rows = Object.keys(scripts).map((name) => {
    const m = meta[name] ?? {};
    return {
      name,
      script: scripts[name]!,
      stage: m.stage ?? (envelopeOnly(name, scripts[name]!) ? 'rcpt' : 'data'),
      rank: m.position ?? Number.POSITIVE_INFINITY,
      active: m.active ?? true,
    };
  });
  const out: OrderedRule[] = [];
  for (const stage of RULE_STAGES) {
    const inStage = rows.filter((r) => r.stage === stage).sort((a, b) => a.rank - b.rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    inStage.forEach((r, i) => out.push({ name: r.name, script: r.script, stage, position: i + 1, active: r.active }));
  }
  return out;
}

/** The names of one stage, in order. */
export const stageOrder = (rules: OrderedRule[], stage: RuleStage): string[] => rules.filter((r) => r.stage === stage).map((r) => r.name);

/** Thrown by `place` when the position is past the end of the stage. */
export class PositionOutOfRange extends Error {
  constructor(
    readonly position: number,
    readonly max: number,
  ) {
    super(`position ${position} is past the end of the stage (1 to ${max})`);
  }
}

/**
 * The metadata after moving `name` to `stage` at `position` (1-based; omitted: its current
 * place when it stays in its stage, else its name-order place, see below), with
 * `active` set when given. Every other rule keeps its relative order.
 */
export function place(rules: OrderedRule[], name: string, to: { stage?: RuleStage; position?: number; active?: boolean }): Record<string, RuleMeta> {
  const current = rules.find((r) => r.name === name);
  const stage = to.stage ?? current?.stage ?? 'data';
  const lists: Record<RuleStage, string[]> = { rcpt: stageOrder(rules, 'rcpt'), data: stageOrder(rules, 'data') };
  const oldIndex = current ? lists[current.stage].indexOf(name) : -1;
  if (current) lists[current.stage].splice(oldIndex, 1);
  const list = lists[stage];
  let index = list.length;
  if (to.position !== undefined) {
    if (to.position > list.length + 1) throw new PositionOutOfRange(to.position, list.length + 1);
    index = to.position - 1;
  } else if (current && current.stage === stage) index = oldIndex;
  else {
    // New to the stage: before the first rule whose name sorts after its own, so a stage that was
    // never reordered stays in name order (rules like 10-spam, 20-lists sort where expected).
    const after = list.findIndex((n) => n > name);
    if (after >= 0) index = after;
  }
  list.splice(index, 0, name);
  const active = new Map(rules.map((r) => [r.name, r.active]));
  active.set(name, to.active ?? current?.active ?? true);
  const meta: Record<string, RuleMeta> = {};
  for (const s of RULE_STAGES) lists[s].forEach((n, i) => (meta[n] = { stage: s, position: i + 1, active: active.get(n)! }));
  return meta;
}
