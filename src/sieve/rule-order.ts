// Stage, position and activation of the admin (gateway) Sieve rules. The REST API writes them
// (src/api/rules-repository.ts) to the store hash `sieve:rules:meta` (rule name → JSON RuleMeta),
// next to the scripts in `sieve:rules`; plugins/sieve reads both and runs the rules in the order
// given here. Pure functions: no store, no compiler (the caller says which scripts are
// envelope-only, see sieve/analyze.ts).
//
// The rules run in one order, the operator contract's "name order unless ordered otherwise": by
// stored stage (rcpt before data), then stored position, then name; a rule without a position
// comes after the positioned ones of its stage, and a rule without metadata (written into the
// store by hand, or before metadata existed) after every positioned one, in name order. So rules
// never ordered run in name order.
//
// The stage is not chosen but follows from that order, so that deciding a rule early never
// changes the outcome of running them all in order, one after the other:
//   rcpt  the rule asks only envelope questions and so does every rule before it (the files the
//         sieve plugin runs first included, `leadEarly`): it is decided at RCPT too, before the
//         message exists, and a reject there refuses that recipient (550 5.7.1 at RCPT). Nothing
//         before it can read the message, so nothing before it could have decided otherwise;
//   data  every rule from the first one that reads the message (or asks for an outside fact) on,
//         whatever its script: it runs at DATA, in order, after the rules before it.
// Inactive rules do not run but keep their place and count here as if active, so switching one
// off or on never moves another rule between stages. What the API writes back is the stage found
// at that change with positions 1, 2, … within it, which gives the same order when read again.

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
 * Every rule with its metadata resolved (stage as it follows from the order, positions 1..n per
 * stage), in run order: stage rcpt first, then data. `leadEarly`: the scripts that run before the
 * store rules (the sieve plugin's files) can all be decided at RCPT too; when false every rule is
 * at stage data.
 */
export function orderRules(scripts: Record<string, string>, meta: Record<string, Partial<RuleMeta> | undefined>, envelopeOnly: (name: string, script: string) => boolean, leadEarly = true): OrderedRule[] {
  const rows = Object.keys(scripts).map((name) => {
    const m = meta[name] ?? {};
    return { name, script: scripts[name]!, block: m.stage === 'rcpt' ? 0 : 1, rank: m.position ?? Number.POSITIVE_INFINITY, active: m.active ?? true };
  });
  rows.sort((a, b) => a.block - b.block || a.rank - b.rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let early = leadEarly;
  const count: Record<RuleStage, number> = { rcpt: 0, data: 0 };
  return rows.map((r) => {
    // RCPT may decide a rule only while every rule before it could be decided there too.
    early &&= envelopeOnly(r.name, r.script);
    const stage: RuleStage = early ? 'rcpt' : 'data';
    return { name: r.name, script: r.script, stage, position: ++count[stage], active: r.active };
  });
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
 * The metadata after placing `name` (a rule there or a new one) and setting `active` when given;
 * every other rule keeps its relative order. With `position` (1-based), the rule goes there
 * within `stage` (omitted: its current stage; a new rule's is data). Without, it keeps its place
 * when it stays in its stage, goes to its name-order place within `stage` when moved there, and a
 * new rule without a stage goes to its name-order place in the whole list. The stages that come
 * out are those orderRules gives the new order, which may differ from the one asked for (a rule
 * that reads the message is never at stage rcpt): the caller checks.
 */
export function place(rules: OrderedRule[], name: string, to: { stage?: RuleStage; position?: number; active?: boolean }): Record<string, RuleMeta> {
  const current = rules.find((r) => r.name === name);
  const lists: Record<RuleStage, string[]> = { rcpt: stageOrder(rules, 'rcpt'), data: stageOrder(rules, 'data') };
  const oldIndex = current ? lists[current.stage].indexOf(name) : -1;
  if (current) lists[current.stage].splice(oldIndex, 1);
  let stage = to.stage ?? current?.stage ?? 'data';
  let index: number;
  if (to.position !== undefined) {
    if (to.position > lists[stage].length + 1) throw new PositionOutOfRange(to.position, lists[stage].length + 1);
    index = to.position - 1;
  } else if (current && current.stage === stage) index = oldIndex;
  else if (to.stage) index = nameOrderIndex(lists[stage], name);
  else {
    const i = nameOrderIndex([...lists.rcpt, ...lists.data], name);
    [stage, index] = i < lists.rcpt.length ? ['rcpt', i] : ['data', i - lists.rcpt.length];
  }
  lists[stage].splice(index, 0, name);
  const active = new Map(rules.map((r) => [r.name, r.active]));
  active.set(name, to.active ?? current?.active ?? true);
  const meta: Record<string, RuleMeta> = {};
  for (const s of RULE_STAGES) lists[s].forEach((n, i) => (meta[n] = { stage: s, position: i + 1, active: active.get(n)! }));
  return meta;
}

/**
 * Where `name` goes in `list` by name: after the last rule whose name sorts before its own, so a
 * list never reordered stays in name order (rules like 10-spam, 20-lists sort where expected) and
 * in a reordered one the new rule follows every rule it sorts after.
 */
function nameOrderIndex(list: string[], name: string): number {
  for (let i = list.length - 1; i >= 0; i--) if (list[i]! < name) return i + 1;
  return 0;
}
