// Sieve AST (RFC 5228 §2, §8.2). Produced by grammar.peggy; every node carries its `location`
// (1-based line and column, 0-based offset) so validation passes and the runtime can report
// `line:column: message`. Identifiers (command, test and tag names) are lower-cased.

export interface Position {
  line: number;
  column: number;
  offset: number;
}

export interface Location {
  start: Position;
  end: Position;
}

export interface StringArg {
  type: 'string';
  value: string;
  multiline: boolean;
  location: Location;
}

export interface StringListArg {
  type: 'stringlist';
  items: StringArg[];
  location: Location;
}

export interface NumberArg {
  type: 'number';
  value: number;
  /** As written, e.g. "10K". */
  text: string;
  location: Location;
}

export interface TagArg {
  type: 'tag';
  /** Without the colon, lower-cased. */
  name: string;
  location: Location;
}

export type Argument = StringArg | StringListArg | NumberArg | TagArg;

export interface TestNode {
  type: 'test';
  name: string;
  nameLocation: Location;
  args: Argument[];
  tests: TestNode[];
  /** True when the tests were written as a parenthesised test-list. */
  testList: boolean;
  location: Location;
}

export interface CommandNode {
  type: 'command';
  name: string;
  nameLocation: Location;
  args: Argument[];
  tests: TestNode[];
  testList: boolean;
  /** null when the command ended with ";". */
  block: CommandNode[] | null;
  location: Location;
}

export interface ScriptNode {
  type: 'script';
  commands: CommandNode[];
  location: Location;
}

export type Node = ScriptNode | CommandNode | TestNode | Argument;

/** A compile or runtime diagnostic, as `sieve check` and the API print it. */
export interface SieveError {
  line: number;
  column: number;
  message: string;
}

export function errorAt(location: Location | undefined, message: string): SieveError {
  return { line: location?.start.line ?? 1, column: location?.start.column ?? 1, message };
}
