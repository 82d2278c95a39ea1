import { IDisposable, toDisposable } from './disposable';

export type Listener<T> = (event: T) => void;
/** A typed event: subscribing returns what unsubscribes. */
export type Event<T> = (listener: Listener<T>) => IDisposable;

export class Emitter<T> implements IDisposable {
  private listeners: Listener<T>[] = [];

  readonly event: Event<T> = (listener) => {
    this.listeners.push(listener);
    return toDisposable(() => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    });
  };

  fire(value: T): void {
    // Copy: a listener may unsubscribe itself while we iterate.
    for (const listener of this.listeners.slice()) listener(value);
  }

  get hasListeners(): boolean {
    return this.listeners.length > 0;
  }

  dispose(): void {
    this.listeners = [];
  }
}
