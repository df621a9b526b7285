/**
 * A child process for the file store's multi-process tests (test/stores/file-processes.test.ts).
 * It opens a file store on the job's `dir`, reports "ready", waits for "go" from the parent (so
 * every worker starts its writes at the same moment), runs the job's writes all in parallel, and
 * reports how many of them resolved `true` (found their session), then exits.
 *
 * The "hold" job instead holds a session's lock for as long as the parent wants, frozen as a
 * process in a GC pause or a debugger is: one merge whose clock (read under the lock) writes the
 * file `held` and then blocks the event loop until the file `release` exists.
 *
 * Started by `fork` (an IPC channel) with `--conditions=sessionkit-source --import tsx`; the job
 * is the first argument, as JSON.
 */
import { existsSync, writeFileSync } from "node:fs";
import { defaultCodec } from "sessionkit";
import { fileStore } from "sessionkit/stores/file";
import { noChanges } from "sessionkit/testing";
import { sleep } from "./keys.js";

export type FileStoreJob =
	/** `times` parallel increments of `n` on one session. */
	| { kind: "increment"; dir: string; key: string; times: number }
	/** `rounds` merges one after another on each of `keys` (that set `late`), the keys in parallel; resolves the merges that found their session. */
	| { kind: "merge"; dir: string; keys: string[]; rounds: number }
	/** A delete of each of `keys`, in parallel, each once a merge has set `late` on it (so merges of it are under way). */
	| { kind: "delete"; dir: string; keys: string[] }
	/** One increment of `n` on `key` that holds the key's lock from the moment it creates `held` until `release` exists. */
	| { kind: "hold"; dir: string; key: string; held: string; release: string };

export type WorkerMessage = { ready: true } | { done: true; kept: number } | { failed: string };

const HOUR = 3_600_000;

function send(message: WorkerMessage): void {
	process.send!(message);
}

/** A clock that, on its first call, announces the lock held and blocks until released. */
function holdingClock(held: string, release: string): () => number {
	let holding = false;
	const pause = new Int32Array(new SharedArrayBuffer(4));
	return () => {
		if (!holding) {
			holding = true;
			writeFileSync(held, String(process.pid));
			while (!existsSync(release)) Atomics.wait(pause, 0, 0, 10);
		}
		return Date.now();
	};
}

async function hold(job: Extract<FileStoreJob, { kind: "hold" }>): Promise<number> {
	const store = fileStore({ dir: job.dir, gcInterval: 0, clock: holdingClock(job.held, job.release) });
	const found = await store.merge(job.key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR);
	await store.close();
	return found ? 1 : 0;
}

async function run(job: FileStoreJob): Promise<number> {
	if (job.kind === "hold") return hold(job);
	const store = fileStore({ dir: job.dir, gcInterval: 0 });
	const expiresAt = Date.now() + HOUR;
	let writes: Array<Promise<boolean | number | void>>;
	if (job.kind === "increment") {
		writes = Array.from({ length: job.times }, () => store.merge(job.key, noChanges({ increment: { n: 1 } }), expiresAt));
	} else if (job.kind === "merge") {
		const { rounds } = job;
		writes = job.keys.map(async (key) => {
			let found = 0;
			for (let round = 0; round < rounds; round++) {
				if (await store.merge(key, noChanges({ set: { late: defaultCodec.encode(round) } }), expiresAt)) found++;
			}
			return found;
		});
	} else {
		writes = job.keys.map(async (key) => {
			while ((await store.get(key))?.data.late === undefined) await sleep(1);
			await store.delete(key);
			return true;
		});
	}
	const results = await Promise.all(writes);
	await store.close();
	return results.reduce<number>((kept, result) => kept + (result === true ? 1 : typeof result === "number" ? result : 0), 0);
}

const job = JSON.parse(process.argv[2]!) as FileStoreJob;
process.once("message", () => {
	run(job).then(
		(kept) => send({ done: true, kept }),
		(error: unknown) => send({ failed: error instanceof Error ? `${error.name}: ${error.message}` : String(error) }),
	).finally(() => process.disconnect());
});
send({ ready: true });
