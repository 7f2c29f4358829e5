// Local pub/sub bookkeeping shared by the store drivers: who listens on which channel, and the
// delivery of an event to them. Drivers decide when an event arrives (after a journal read, a
// Redis message, …); this class only keeps the handlers and calls them safely.
import type { ChangeEvent } from './store.js';

type Handler = (ev: ChangeEvent) => void;

export class Subscribers {
  private readonly byChannel = new Map<string, Set<Handler>>();

  /** Returns the unsubscribe function. */
  add(channel: string, handler: Handler): () => void {
    let subs = this.byChannel.get(channel);
    if (!subs) this.byChannel.set(channel, (subs = new Set()));
    // Wrapped, so one function subscribed twice is two subscriptions, each undone on its own.
    const own: Handler = (ev) => handler(ev);
    subs.add(own);
    return () => {
      subs.delete(own);
      if (subs.size === 0 && this.byChannel.get(channel) === subs) this.byChannel.delete(channel);
    };
  }

  has(channel: string): boolean {
    return Boolean(this.byChannel.get(channel)?.size);
  }

  channels(): string[] {
    return [...this.byChannel.keys()];
  }

  /** Calls every handler of the event's channel; a handler that throws never starves the others. */
  deliver(ev: ChangeEvent, onError: (err: unknown) => void = () => undefined): void {
    for (const h of [...(this.byChannel.get(ev.channel) ?? [])]) {
      try {
        h(ev);
      } catch (err) {
        onError(err);
      }
    }
  }

  clear(): void {
    this.byChannel.clear();
  }
}
