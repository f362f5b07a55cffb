// A one-slot wake-up signal, like Go's `chan struct{}` of capacity 1: a notify
// with nobody waiting is kept for the next wait, several collapse into one.

export class Waker {
  private pending = false;
  private resolve: (() => void) | null = null;

  notify(): void {
    if (this.resolve) {
      const r = this.resolve;
      this.resolve = null;
      r();
    } else {
      this.pending = true;
    }
  }

  /** Waits for a notify or ms milliseconds (forever when ms < 0). */
  wait(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.resolve = () => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      if (ms >= 0) {
        timer = setTimeout(() => {
          this.resolve = null;
          resolve();
        }, ms);
      }
    });
  }
}
