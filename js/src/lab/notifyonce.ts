// One notification per finished reply, however many tabs of this origin show JupyterLab: every
// tab's panel hears the same CONVERSATION_UPDATED, and each would otherwise raise its own. The
// tabs that would notify race for a claim on the reply; the first one wins and notifies.
//
// The claim is a Web Lock (`navigator.locks`: atomic across the tabs of an origin) taken only
// if free and held a while, and a record in local storage, which outlasts the lock: a tab that
// hears of the reply late (its socket was slow) finds the record. Where there are no Web Locks
// (a page served over plain HTTP from a host other than localhost is no secure context), each
// tab writes its own id into the record, waits for the other tabs' writes to reach it, and the
// tab whose id the record then holds notifies: the last writer, one tab all the same.

import { randomId } from '../view/dom';

const PREFIX = 'jupyter-streamchat:notified:';
/** Records older than this are dropped when a claim is made. */
const KEEP_MS = 10 * 60_000;
/** A won lock is held this long, so tabs that hear of the reply a moment later find it taken. */
const HOLD_MS = 30_000;
/** Without Web Locks: how long writes of other tabs are given to reach this one. */
const SETTLE_MS = 300;

const tab = randomId(); // this tab, in records

/** Whether this tab is the one to notify about `key` (a reply's end, the same in every tab).
 * Resolves false when another tab has claimed it. */
export async function claimNotification(key: string): Promise<boolean> {
  const name = PREFIX + key;
  prune();
  if (read(name) !== null) {
    return false;
  }
  const locks = typeof navigator === 'undefined' ? undefined : navigator.locks;
  if (locks) {
    try {
      return await new Promise<boolean>((resolve, reject) => {
        locks
          .request(name, { ifAvailable: true }, async lock => {
            const won = lock !== null && read(name) === null;
            if (won) {
              write(name);
            }
            resolve(won);
            if (won) {
              await new Promise(done => setTimeout(done, HOLD_MS));
            }
          })
          .catch(reject);
      });
    } catch {
      // Locks refused here (an opaque origin, say): claim through storage alone.
    }
  }
  if (!write(name)) {
    return true; // no storage either: this tab cannot know of others, so it notifies
  }
  await new Promise(done => setTimeout(done, SETTLE_MS));
  return read(name)?.tab === tab;
}

interface Claim {
  tab: string;
  at: number;
}

function read(name: string): Claim | null {
  try {
    const value = JSON.parse(localStorage.getItem(name) ?? 'null');
    return value && typeof value.tab === 'string' ? value : null;
  } catch {
    return null;
  }
}

function write(name: string): boolean {
  try {
    localStorage.setItem(name, JSON.stringify({ tab, at: Date.now() }));
    return true;
  } catch {
    return false; // refused or full
  }
}

function prune(): void {
  try {
    const now = Date.now();
    const old: string[] = [];
    for (let i = 0; i < localStorage.length; i++) {
      const name = localStorage.key(i);
      if (name?.startsWith(PREFIX)) {
        const record = read(name);
        if (record === null || !(now - record.at < KEEP_MS)) {
          old.push(name);
        }
      }
    }
    old.forEach(name => localStorage.removeItem(name));
  } catch {
    // no storage: nothing to prune
  }
}
