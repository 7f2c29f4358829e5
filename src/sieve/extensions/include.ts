// RFC 6609 include: include [:personal | :global] [:once] [:optional] <script-name>, return,
// and global <names> (needs variables). The host supplies script text; each included script is
// compiled here and runs with the caller's actions and global variables but its own local
// variables (§3.4). Include depth and count are limited (limits.ts); a script including itself
// through a chain is a runtime error (§3.2), unless :once makes the repeat a no-op.
import { compile, type CompiledScript } from '../compile.js';
import { ReturnSignal, type ExtensionDef } from '../registry.js';
import { VARIABLE_NAME } from './variables.js';

const compiledCache = new Map<string, CompiledScript | string>();

const include: ExtensionDef = {
  capabilities: ['include'],
  register(reg) {
    reg.add({
      name: 'include',
      kind: 'command',
      extension: 'include',
      tags: [{ name: 'personal', group: 'location' }, { name: 'global', group: 'location' }, { name: 'once' }, { name: 'optional' }],
      positional: [{ name: 'script-name', kind: 'string' }],
      check(n, v) {
        const a = n.args[0];
        if (a?.kind === 'string' && (a.value === '' || a.value.includes('/'))) v.report(`include: invalid script name "${a.value}"`, a.location);
      },
      async run(n, rt) {
        const name = rt.str(n.args[0]);
        const loc = n.tags.has('global') ? 'global' : 'personal';
        const key = `${loc}:${name}`;
        const stack = (rt.ext.get('include-stack') as string[] | undefined) ?? [];
        rt.ext.set('include-stack', stack);
        if (n.tags.has('once') && rt.includedOnce.has(key)) return;
        if (stack.includes(key)) rt.fail(`include loop: "${name}" is already being run`, n.location);
        const text = rt.host.include ? await rt.host.include(name, loc) : undefined;
        if (text === undefined) {
          if (n.tags.has('optional')) return;
          return rt.fail(`included script "${name}" not found`, n.location);
        }
        // The site's enabled extensions (sieve.extensions) bind included scripts too.
        const extensions = rt.config.extensions;
        const cacheKey = extensions ? `${extensions.join(',')}\0${text}` : text;
        let compiled = compiledCache.get(cacheKey);
        if (!compiled) {
          const r = compile(text, { registry: reg, limits: rt.limits, ...(extensions ? { extensions } : {}) });
          compiled = r.ok ? r.script : r.errors.map((e) => `${e.line}:${e.column}: ${e.message}`).join('; ');
          if (compiledCache.size > 256) compiledCache.clear();
          compiledCache.set(cacheKey, compiled);
        }
        if (typeof compiled === 'string') return rt.fail(`included script "${name}" does not compile: ${compiled}`, n.location);
        rt.includedOnce.add(key);
        stack.push(key);
        try {
          await rt.runIncluded(compiled, n.location);
        } finally {
          stack.pop();
        }
      },
    });
    reg.add({
      name: 'return',
      kind: 'command',
      extension: 'include',
      tags: [],
      positional: [],
      run() {
        throw new ReturnSignal();
      },
    });
    reg.add({
      name: 'global',
      kind: 'command',
      extension: 'include',
      tags: [],
      positional: [{ name: 'names', kind: 'stringlist' }],
      check(n, v) {
        if (!v.has('variables')) v.report('global needs require "variables"', n.location);
        const a = n.args[0];
        if (a?.kind === 'stringlist') for (const s of a.values) if (!VARIABLE_NAME.test(s)) v.report(`global: invalid variable name "${s}"`, a.location);
      },
      run(n, rt) {
        for (const s of rt.list(n.args[0])) rt.globalNames.add(s.toLowerCase());
      },
    });
  },
};
export default include;
