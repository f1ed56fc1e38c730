/**
 * The one serial queue of imakeep: promise-returning tasks run one at a time, in call order (a
 * TPM takes one command at a time; the store's writes must not interleave). A failed task
 * rejects its own promise only: the tasks after it still run.
 */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every task queued before it; resolves or rejects as `task` does. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task);
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has settled (never rejects). */
  async idle(): Promise<void> {
    await this.#tail;
  }
}
