// Config keys owned by the plugin host: `plugins`, the chain in order. Each entry is a name
// ("relay-acl"), or a one-key map from name to that plugin's options ({ dnsbl: { zones: [...] } }).
// A name is a built-in plugin (plugins/<name>/), a path (./x.js, /x.js, relative to the config
// file) or a package name. Options are checked against the plugin's own schema when the chain
// loads (pipeline/loader.ts), so a bad option fails `check-config` and start, never a hook.
import { z } from 'zod';

export const pluginEntrySchema = z.union([
  z.string().min(1),
  z.record(z.string().min(1), z.record(z.string(), z.unknown()).nullable()).refine((o) => Object.keys(o).length === 1, {
    message: 'a plugin entry is a name or a map with exactly one name',
  }),
]);

/** The chain used when the config file names none: never an open relay, and authentication. */
export const DEFAULT_PLUGINS = ['auth', 'relay-acl'];

export const pluginsSchema = z.array(pluginEntrySchema).default(DEFAULT_PLUGINS);

/** Options every plugin accepts, handled by the runner rather than the plugin itself. */
export const commonPluginOptions = {
  /** Per-hook deadline; past it the hook counts as failed. */
  timeout: z.union([z.number().int().positive(), z.string()]).optional(),
  /** What a throw or a timeout means: a 451 4.3.0 (default) or "no opinion" (fail-open). */
  on_error: z.enum(['tempfail', 'fail-open']).optional(),
};

export type PluginEntry = z.infer<typeof pluginEntrySchema>;
