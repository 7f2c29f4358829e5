// Config keys owned by the state store: `store`.
import { z } from 'zod';

export const storeSchema = z.discriminatedUnion('driver', [
  z.object({ driver: z.literal('embedded') }).strict(),
  z
    .object({
      driver: z.literal('redis'),
      url: z.string().default('redis://127.0.0.1:6379/0'),
      prefix: z.string().default('postern:'),
    })
    .strict(),
]);

export type StoreConfig = z.infer<typeof storeSchema>;
