// A linear-time regular expression engine for Sieve: POSIX extended regular expressions as the
// regex extension (draft-ietf-sieve-regex-01, as implemented by Pigeonhole) uses them, and the
// :matches wildcards of RFC 5228 §2.7.1 compiled to the same program. Matching is a Pike VM
// (Thompson NFA simulation with submatch tracking), so time is O(program × input) and no
// pattern can backtrack catastrophically; backreferences (which no linear engine can offer) are
// refused at compile time. Submatches follow leftmost-first priority (Perl-like), which is what
// RFC 5229 match variables need for :matches ("*" takes as little as possible, left to right).
//
// Supported syntax: literals, ".", "[...]" with ranges, negation and [:class:] names, "^", "$",
// "( )" groups (captured), "(?: )", "|", "*", "+", "?", "{n}", "{n,}", "{n,m}", "\" escapes
// (\d \w \s \D \W \S, \n \t \r, and any escaped punctuation). Case folding is ASCII-only, as the
// i;ascii-casemap comparator (RFC 4790 §9.2) defines it.

export class RegexError extends Error {}

type CharTest = (c: number) => boolean;

type Ast =
  | { t: 'empty' }
  | { t: 'char'; test: CharTest; lit?: number }
  | { t: 'bol' }
  | { t: 'eol' }
  | { t: 'cat'; items: Ast[] }
  | { t: 'alt'; items: Ast[] }
  | { t: 'group'; index: number | null; body: Ast }
  | { t: 'rep'; body: Ast; min: number; max: number; greedy: boolean };

type Inst =
  | { op: 'char'; test: CharTest }
  | { op: 'split'; x: number; y: number }
  | { op: 'jmp'; x: number }
  | { op: 'save'; n: number }
  | { op: 'bol' }
  | { op: 'eol' }
  | { op: 'match' };

export interface Program {
  insts: Inst[];
  groups: number;
  /** The pattern starts with "^" (every :matches pattern does): only position 0 can match. */
  anchored: boolean;
  /** Code points an anchored match must start with (folded when `ci`), checked before the VM runs. */
  prefix: number[];
  ci: boolean;
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isUpper = (c: number) => c >= 65 && c <= 90;
const isLower = (c: number) => c >= 97 && c <= 122;
const isAlpha = (c: number) => isUpper(c) || isLower(c);
const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13);
const isWord = (c: number) => isAlpha(c) || isDigit(c) || c === 95;

const CLASSES: Record<string, CharTest> = {
  alpha: isAlpha,
  digit: isDigit,
  alnum: (c) => isAlpha(c) || isDigit(c),
  upper: isUpper,
  lower: isLower,
  space: isSpace,
  blank: (c) => c === 32 || c === 9,
  punct: (c) => (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126),
  print: (c) => c >= 32 && c !== 127,
  graph: (c) => c > 32 && c !== 127,
  cntrl: (c) => c < 32 || c === 127,
  xdigit: (c) => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102),
  word: isWord,
};

/** ASCII-only case fold (RFC 4790 §9.2). */
export function foldAscii(c: number): number {
  return isUpper(c) ? c + 32 : c;
}

function swapAscii(c: number): number {
  return isUpper(c) ? c + 32 : isLower(c) ? c - 32 : c;
}

class Parser {
  private i = 0;
  groups = 0;
  constructor(
    private readonly src: number[],
    private readonly ci: boolean,
  ) {}

  parse(): Ast {
    const ast = this.alt();
    if (this.i < this.src.length) throw new RegexError(`unmatched ")" at position ${this.i + 1}`);
    return ast;
  }

  private peek(): number | undefined {
    return this.src[this.i];
  }

  private alt(): Ast {
    const items = [this.cat()];
    while (this.peek() === 124 /* | */) {
      this.i++;
      items.push(this.cat());
    }
    return items.length === 1 ? items[0]! : { t: 'alt', items };
  }

  private cat(): Ast {
    const items: Ast[] = [];
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === 124 || c === 41 /* ) */) break;
      items.push(this.repeat(this.atom()));
    }
    return items.length === 0 ? { t: 'empty' } : items.length === 1 ? items[0]! : { t: 'cat', items };
  }

  private repeat(atom: Ast): Ast {
    for (;;) {
      const c = this.peek();
      let min: number;
      let max: number;
      if (c === 42 /* * */) [min, max] = [0, Infinity];
      else if (c === 43 /* + */) [min, max] = [1, Infinity];
      else if (c === 63 /* ? */) [min, max] = [0, 1];
      else if (c === 123 /* { */ && this.braceAhead()) {
        [min, max] = this.braces();
        atom = this.rep(atom, min, max);
        continue;
      } else return atom;
      this.i++;
      atom = this.rep(atom, min, max);
    }
  }

  private rep(body: Ast, min: number, max: number): Ast {
    if (body.t === 'bol' || body.t === 'eol') throw new RegexError('quantifier after an anchor');
    return { t: 'rep', body, min, max, greedy: true };
  }

  private braceAhead(): boolean {
    let j = this.i + 1;
    let sawDigit = false;
    while (j < this.src.length && isDigit(this.src[j]!)) {
      j++;
      sawDigit = true;
    }
    return sawDigit;
  }

  private braces(): [number, number] {
    this.i++; // {
    const num = () => {
      let s = '';
      while (this.peek() !== undefined && isDigit(this.peek()!)) s += String.fromCharCode(this.src[this.i++]!);
      return s;
    };
    const a = num();
    let b = a;
    if (this.peek() === 44 /* , */) {
      this.i++;
      b = num();
    }
    if (this.peek() !== 125 /* } */) throw new RegexError('unterminated {n,m} repetition');
    this.i++;
    const min = Number(a);
    const max = b === '' ? Infinity : Number(b);
    if (max < min) throw new RegexError('invalid repetition range {n,m} with n > m');
    if (min > 255 || (max !== Infinity && max > 255)) throw new RegexError('repetition count above 255');
    return [min, max];
  }

  private lit(c: number): Ast {
    if (this.ci && isAlpha(c)) {
      const f = foldAscii(c);
      return { t: 'char', test: (x) => foldAscii(x) === f, lit: c };
    }
    return { t: 'char', test: (x) => x === c, lit: c };
  }

  private atom(): Ast {
    const c = this.src[this.i++]!;
    switch (c) {
      case 40: {
        // (
        let index: number | null = null;
        if (this.peek() === 63 /* ? */) {
          if (this.src[this.i + 1] !== 58 /* : */) throw new RegexError('only (?: ) groups are supported after "(?"');
          this.i += 2;
        } else index = ++this.groups;
        const body = this.alt();
        if (this.peek() !== 41) throw new RegexError('unmatched "("');
        this.i++;
        return { t: 'group', index, body };
      }
      case 41:
        throw new RegexError('unmatched ")"');
      case 42:
      case 43:
      case 63:
        throw new RegexError('quantifier without anything to repeat');
      case 46:
        return { t: 'char', test: () => true };
      case 94:
        return { t: 'bol' };
      case 36:
        return { t: 'eol' };
      case 91:
        return this.bracket();
      case 92:
        return this.escape();
      default:
        return this.lit(c);
    }
  }

  private escape(): Ast {
    const c = this.src[this.i++];
    if (c === undefined) throw new RegexError('trailing backslash');
    if (c >= 49 && c <= 57) throw new RegexError('backreferences are not supported (they cannot run in linear time)');
    switch (String.fromCharCode(c)) {
      case 'd':
        return { t: 'char', test: isDigit };
      case 'D':
        return { t: 'char', test: (x) => !isDigit(x) };
      case 'w':
        return { t: 'char', test: isWord };
      case 'W':
        return { t: 'char', test: (x) => !isWord(x) };
      case 's':
        return { t: 'char', test: isSpace };
      case 'S':
        return { t: 'char', test: (x) => !isSpace(x) };
      case 'n':
        return this.lit(10);
      case 't':
        return this.lit(9);
      case 'r':
        return this.lit(13);
      case 'k':
        throw new RegexError('backreferences are not supported (they cannot run in linear time)');
      default:
        return this.lit(c);
    }
  }

  private bracket(): Ast {
    let negate = false;
    if (this.peek() === 94) {
      negate = true;
      this.i++;
    }
    const tests: CharTest[] = [];
    let first = true;
    for (;;) {
      const c = this.src[this.i];
      if (c === undefined) throw new RegexError('unterminated bracket expression "["');
      if (c === 93 /* ] */ && !first) {
        this.i++;
        break;
      }
      first = false;
      if (c === 91 && this.src[this.i + 1] === 58 /* [: */) {
        const end = this.findClassEnd(this.i + 2);
        const name = String.fromCharCode(...this.src.slice(this.i + 2, end));
        const t = CLASSES[name];
        if (!t) throw new RegexError(`unknown character class [:${name}:]`);
        tests.push(t);
        this.i = end + 2;
        continue;
      }
      let lo = c;
      this.i++;
      if (c === 92 && this.src[this.i] !== undefined) {
        // Not POSIX (a backslash is literal inside brackets there), but what people write.
        const e = this.src[this.i]!;
        const named = { d: isDigit, w: isWord, s: isSpace } as Record<string, CharTest>;
        const t = named[String.fromCharCode(e)];
        if (t) {
          this.i++;
          tests.push(t);
          continue;
        }
        lo = e === 110 ? 10 : e === 116 ? 9 : e;
        this.i++;
      }
      if (this.peek() === 45 /* - */ && this.src[this.i + 1] !== undefined && this.src[this.i + 1] !== 93) {
        this.i++;
        let hi = this.src[this.i++]!;
        if (hi === 92 && this.src[this.i] !== undefined) hi = this.src[this.i++]!;
        if (hi < lo) throw new RegexError('invalid range in bracket expression');
        tests.push((x) => x >= lo && x <= hi);
      } else {
        const v = lo;
        tests.push((x) => x === v);
      }
    }
    const ci = this.ci;
    const any = (x: number) => tests.some((t) => t(x));
    const base: CharTest = ci ? (x) => any(x) || (isAlpha(x) && any(swapAscii(x))) : any;
    return { t: 'char', test: negate ? (x) => !base(x) : base };
  }

  private findClassEnd(from: number): number {
    for (let j = from; j + 1 < this.src.length; j++) {
      if (this.src[j] === 58 && this.src[j + 1] === 93) return j;
    }
    throw new RegexError('unterminated character class "[:"');
  }
}

class Emitter {
  insts: Inst[] = [];
  constructor(private readonly maxProgram: number) {}

  private push(i: Inst): number {
    if (this.insts.length >= this.maxProgram) throw new RegexError(`pattern too complex (over ${this.maxProgram} instructions)`);
    this.insts.push(i);
    return this.insts.length - 1;
  }

  emit(a: Ast): void {
    switch (a.t) {
      case 'empty':
        return;
      case 'char':
        this.push({ op: 'char', test: a.test });
        return;
      case 'bol':
        this.push({ op: 'bol' });
        return;
      case 'eol':
        this.push({ op: 'eol' });
        return;
      case 'cat':
        for (const x of a.items) this.emit(x);
        return;
      case 'alt': {
        const jumps: number[] = [];
        for (let k = 0; k < a.items.length; k++) {
          if (k < a.items.length - 1) {
            const split = this.push({ op: 'split', x: 0, y: 0 });
            (this.insts[split] as { x: number }).x = split + 1;
            this.emit(a.items[k]!);
            jumps.push(this.push({ op: 'jmp', x: 0 }));
            (this.insts[split] as { y: number }).y = this.insts.length;
          } else this.emit(a.items[k]!);
        }
        for (const j of jumps) (this.insts[j] as { x: number }).x = this.insts.length;
        return;
      }
      case 'group':
        if (a.index === null) return this.emit(a.body);
        this.push({ op: 'save', n: a.index * 2 });
        this.emit(a.body);
        this.push({ op: 'save', n: a.index * 2 + 1 });
        return;
      case 'rep': {
        for (let k = 0; k < a.min; k++) this.emit(a.body);
        if (a.max === Infinity) {
          // L: split body, out (greedy) | out, body (lazy); body; jmp L
          const split = this.push({ op: 'split', x: 0, y: 0 });
          this.emit(a.body);
          this.push({ op: 'jmp', x: split });
          const out = this.insts.length;
          this.insts[split] = a.greedy ? { op: 'split', x: split + 1, y: out } : { op: 'split', x: out, y: split + 1 };
        } else {
          const splits: number[] = [];
          for (let k = a.min; k < a.max; k++) {
            splits.push(this.push({ op: 'split', x: 0, y: 0 }));
            this.emit(a.body);
          }
          const out = this.insts.length;
          for (const s of splits) this.insts[s] = a.greedy ? { op: 'split', x: s + 1, y: out } : { op: 'split', x: out, y: s + 1 };
        }
        return;
      }
    }
  }
}

function fromCodePoints(cps: number[], s: number, e: number): string {
  let out = '';
  for (let i = s; i < e; i += 4096) out += String.fromCodePoint(...cps.slice(i, Math.min(e, i + 4096)));
  return out;
}

function codePoints(s: string): number[] {
  const out: number[] = new Array<number>(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out[n++] = (c - 0xd800) * 0x400 + (d - 0xdc00) + 0x10000;
        i++;
        continue;
      }
    }
    out[n++] = c;
  }
  out.length = n;
  return out;
}

/** Literal code points at the start of an anchored pattern ("^abc…"), for a quick reject. */
function anchoredPrefix(ast: Ast, ci: boolean): { anchored: boolean; prefix: number[] } {
  const items = ast.t === 'cat' ? ast.items : [ast];
  if (items[0]?.t !== 'bol') return { anchored: false, prefix: [] };
  const prefix: number[] = [];
  for (const it of items.slice(1)) {
    if (it.t !== 'char' || it.lit === undefined) break;
    prefix.push(ci ? foldAscii(it.lit) : it.lit);
  }
  return { anchored: true, prefix };
}

function finish(ast: Ast, groups: number, maxProgram: number, ci: boolean): Program {
  const em = new Emitter(maxProgram);
  em.insts.push({ op: 'save', n: 0 });
  em.emit(ast);
  em.insts.push({ op: 'save', n: 1 }, { op: 'match' });
  return { insts: em.insts, groups, ci, ...anchoredPrefix(ast, ci) };
}

/** Compiles a POSIX extended regular expression. Throws RegexError with a readable reason. */
export function compileRegex(pattern: string, opts: { caseInsensitive: boolean; maxLength: number; maxProgram: number }): Program {
  if (pattern.length > opts.maxLength) throw new RegexError(`pattern longer than ${opts.maxLength} characters`);
  const p = new Parser(codePoints(pattern), opts.caseInsensitive);
  const ast = p.parse();
  return finish(ast, p.groups, opts.maxProgram, opts.caseInsensitive);
}

/**
 * Compiles a :matches pattern (RFC 5228 §2.7.1): "*" any sequence, "?" one character, "\"
 * escapes the next character. Anchored at both ends. Each wildcard is a capture group so match
 * variables (RFC 5229 §3.2) can read what it took; "*" is lazy (takes as little as possible).
 */
export function compileGlob(pattern: string, opts: { caseInsensitive: boolean; maxProgram: number }): Program {
  const items: Ast[] = [{ t: 'bol' }];
  let groups = 0;
  const cps = codePoints(pattern);
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i]!;
    if (c === 42 /* * */) {
      // Consecutive stars behave like one but each still counts as a match variable.
      items.push({ t: 'group', index: ++groups, body: { t: 'rep', body: { t: 'char', test: () => true }, min: 0, max: Infinity, greedy: false } });
    } else if (c === 63 /* ? */) {
      items.push({ t: 'group', index: ++groups, body: { t: 'char', test: () => true } });
    } else {
      let lit = c;
      if (c === 92 /* \ */ && i + 1 < cps.length) lit = cps[++i]!;
      if (opts.caseInsensitive && isAlpha(lit)) {
        const f = foldAscii(lit);
        items.push({ t: 'char', test: (x) => foldAscii(x) === f, lit });
      } else items.push({ t: 'char', test: (x) => x === lit, lit });
    }
  }
  items.push({ t: 'eol' });
  return finish({ t: 'cat', items }, groups, opts.maxProgram, opts.caseInsensitive);
}

/**
 * Runs a program against `text` (searching, unanchored unless the pattern anchors itself).
 * Returns null when there is no match, otherwise the whole match and each group's text ("" for
 * a group that did not participate).
 */
export function execProgram(prog: Program, text: string): string[] | null {
  const input = codePoints(text);
  const n = input.length;
  if (prog.prefix.length > 0) {
    // An anchored pattern whose literal start is not there cannot match.
    if (n < prog.prefix.length) return null;
    for (let i = 0; i < prog.prefix.length; i++) {
      const c = prog.ci ? foldAscii(input[i]!) : input[i]!;
      if (c !== prog.prefix[i]) return null;
    }
  }
  const slots = (prog.groups + 1) * 2;
  type Thread = { pc: number; caps: Int32Array };
  let clist: Thread[] = [];
  let nlist: Thread[] = [];
  let matched: Int32Array | null = null;
  const onList = new Int32Array(prog.insts.length).fill(-1);
  let gen = 0;

  const add = (list: Thread[], pc: number, caps: Int32Array, pos: number) => {
    // Iterative epsilon closure with an explicit stack (priority order preserved).
    const stack: Array<[number, Int32Array]> = [[pc, caps]];
    while (stack.length > 0) {
      const [p, c] = stack.pop()!;
      if (onList[p] === gen) continue;
      onList[p] = gen;
      const inst = prog.insts[p]!;
      switch (inst.op) {
        case 'jmp':
          stack.push([inst.x, c]);
          break;
        case 'split':
          stack.push([inst.y, c], [inst.x, c]);
          break;
        case 'save': {
          const c2 = c.slice();
          c2[inst.n] = pos;
          stack.push([p + 1, c2]);
          break;
        }
        case 'bol':
          if (pos === 0) stack.push([p + 1, c]);
          break;
        case 'eol':
          if (pos === n) stack.push([p + 1, c]);
          break;
        default:
          list.push({ pc: p, caps: c });
      }
    }
  };

  const empty = new Int32Array(slots).fill(-1);
  gen++;
  add(clist, 0, empty, 0);
  for (let pos = 0; pos <= n && clist.length > 0; pos++) {
    gen++;
    nlist = [];
    const c = input[pos];
    for (const t of clist) {
      const inst = prog.insts[t.pc]!;
      if (inst.op === 'match') {
        matched = t.caps;
        break; // lower-priority threads are cut (leftmost-first)
      }
      if (inst.op === 'char' && c !== undefined && inst.test(c)) add(nlist, t.pc + 1, t.caps, pos + 1);
    }
    // Unanchored search: until something matched, a new thread starts at the next position with
    // the lowest priority, so earlier starts win.
    if (matched === null && pos < n && !prog.anchored) add(nlist, 0, empty, pos + 1);
    clist = nlist;
  }
  if (matched === null) return null;
  const out: string[] = [];
  for (let g = 0; g <= prog.groups; g++) {
    const s = matched[g * 2]!;
    const e = matched[g * 2 + 1]!;
    out.push(s >= 0 && e >= 0 ? fromCodePoints(input, s, e) : '');
  }
  return out;
}
