/**
 * Load against the real server (issue 11): many slow connections held open (slowloris clients
 * still sending headers, and readers of the whole log that read nothing) while a steady stream of
 * `/v1/status` requests arrives. Counts what every client got, so a test asserts on answers, not
 * on time: every status request answered, and no connection reset without an HTTP answer.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** What a load run saw. */
export interface LoadReport {
  /** Status requests sent, and answered 200 within `answerWithinMs`. */
  readonly statusSent: number;
  readonly statusAnswered: number;
  /** Status lines the slow connections received, by status code ('none': closed without an HTTP answer). */
  readonly slowAnswers: Readonly<Record<string, number>>;
  /** Error codes in the bodies of 503 answers to the slow connections. */
  readonly busyCodes: Readonly<Record<string, number>>;
  /** 503 answers that carried `Retry-After`. */
  readonly retryAfter: number;
}

/** Options of {@link loadRun}. */
export interface LoadOptions {
  readonly socket: string;
  readonly slowloris: number;
  readonly slowReaders: number;
  readonly statusRequests: number;
  readonly statusEveryMs: number;
  /** The bound on each status answer (a request not answered by then counts as unanswered). */
  readonly answerWithinMs: number;
}

/** One `/v1/status` request on a new connection: true if answered 200 within `withinMs`. */
function statusRequest(socket: string, withinMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(socket);
    let got = '';
    const timer = setTimeout(() => {
      c.destroy();
      resolve(false);
    }, withinMs);
    c.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (/^HTTP\/1\.1 200 [\s\S]*\r\n\r\n\{/.test(got)) {
        clearTimeout(timer);
        c.destroy();
        resolve(true);
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(timer);
      resolve(/^HTTP\/1\.1 200 /.test(got));
    });
    c.write('GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  });
}

/** A held connection: what it received until it closed (or until the run ends). */
interface Held {
  readonly socket: Socket;
  received: string;
  closed: boolean;
}

function hold(socket: string, start: (c: Socket) => void, readBody: boolean): Held {
  const c = connect(socket);
  const held: Held = { socket: c, received: '', closed: false };
  c.on('data', (d: Buffer) => {
    // A slow reader reads the head of the answer, then stops reading.
    if (held.received.length < 4096) held.received += d.toString('latin1');
    if (!readBody && /\r\n\r\n/.test(held.received)) c.pause();
  });
  c.on('error', () => undefined);
  c.on('close', () => {
    held.closed = true;
  });
  start(c);
  return held;
}

/** Runs the load; closes every connection it opened. */
export async function loadRun(o: LoadOptions): Promise<LoadReport> {
  const held: Held[] = [];
  const drips: NodeJS.Timeout[] = [];
  try {
    for (let i = 0; i < o.slowReaders; i++) {
      held.push(hold(o.socket, (c) => c.write('GET /v1/log?format=ascii&bank=sha256 HTTP/1.1\r\nHost: x\r\n\r\n'), false));
    }
    for (let i = 0; i < o.slowloris; i++) {
      held.push(
        hold(
          o.socket,
          (c) => {
            c.write('GET /v1/status HTTP/1.1\r\nHost: x\r\n');
            drips.push(setInterval(() => c.writable && c.write('X'), 200));
          },
          true,
        ),
      );
    }
    await sleep(200);
    const answers: Promise<boolean>[] = [];
    for (let i = 0; i < o.statusRequests; i++) {
      answers.push(statusRequest(o.socket, o.answerWithinMs));
      await sleep(o.statusEveryMs);
    }
    const answered = (await Promise.all(answers)).filter(Boolean).length;
    const slowAnswers: Record<string, number> = {};
    const busyCodes: Record<string, number> = {};
    let retryAfter = 0;
    for (const h of held) {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(h.received)?.[1] ?? (h.closed ? 'none' : 'pending');
      slowAnswers[status] = (slowAnswers[status] ?? 0) + 1;
      if (status === '503') {
        const code = /"code":"([A-Z_]+)"/.exec(h.received)?.[1] ?? 'no code';
        busyCodes[code] = (busyCodes[code] ?? 0) + 1;
        if (/\r\nRetry-After: \d+\r\n/i.test(h.received)) retryAfter++;
      }
    }
    return { statusSent: o.statusRequests, statusAnswered: answered, slowAnswers, busyCodes, retryAfter };
  } finally {
    for (const d of drips) clearInterval(d);
    for (const h of held) h.socket.destroy();
  }
}
