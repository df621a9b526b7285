/**
 * The file store shared by several processes on one directory (node cluster, pm2 workers): real
 * child processes, each with its own file store on the same `dir`, released at the same moment.
 */
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat, utimes, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { defaultCodec, SessionStoreError } from "sessionkit";
import { fileStore } from "sessionkit/stores/file";
import { makeRecord, noChanges } from "sessionkit/testing";
import type { FileStoreJob, WorkerMessage } from "../helpers/file-store-worker.js";
import { randomKey, sleep } from "../helpers/keys.js";

const HOUR = 3_600_000;
const WORKER = fileURLToPath(new URL("../helpers/file-store-worker.ts", import.meta.url));
// Starting a child through tsx takes about a second on a busy machine; the writes take less.
const WORKER_DEADLINE_MS = 30_000;

interface Worker {
	/** Resolves once the child has opened its store and waits for "go". */
	ready: Promise<void>;
	/** Resolves with how many of the job's writes resolved `true`. */
	done: Promise<number>;
	go(): void;
	pid: number;
	kill(signal: NodeJS.Signals): void;
}

function startWorker(job: FileStoreJob): Worker {
	const child = fork(WORKER, [JSON.stringify(job)], {
		execArgv: ["--conditions=sessionkit-source", "--import", "tsx"],
		timeout: WORKER_DEADLINE_MS,
	});
	let markReady!: () => void;
	const ready = new Promise<void>((resolve) => (markReady = resolve));
	const done = new Promise<number>((resolve, reject) => {
		child.on("message", (message: WorkerMessage) => {
			if ("ready" in message) markReady();
			else if ("done" in message) resolve(message.kept);
			else reject(new Error(`worker failed: ${message.failed}`));
		});
		child.once("exit", (code, signal) => reject(new Error(`worker exited (code ${code}, signal ${signal}) before reporting`)));
	});
	// A child that dies before "ready" must fail the test, not hang it.
	return {
		ready: Promise.race([ready, done.then(() => {})]),
		done,
		go: () => void child.send("go"),
		pid: child.pid!,
		kill: (signal) => void child.kill(signal),
	};
}

/** Runs each job in its own process, all released at once; resolves each job's count of writes that resolved `true`. */
async function runInProcesses(jobs: FileStoreJob[]): Promise<number[]> {
	const workers = jobs.map(startWorker);
	await Promise.all(workers.map((worker) => worker.ready));
	for (const worker of workers) worker.go();
	return Promise.all(workers.map((worker) => worker.done));
}

describe("file store shared by several processes", () => {
	let root: string;
	let n = 0;
	const freshDir = () => join(root, `store-${n++}`);

	before(async () => {
		root = await mkdtemp(join(tmpdir(), "sessionkit-file-processes-"));
	});
	after(async () => {
		await rm(root, { recursive: true, force: true });
	});

	it("keeps every increment when 3 processes merge one session in parallel", { timeout: 60_000 }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const times = 200;
		const kept = await runInProcesses([0, 1, 2].map(() => ({ kind: "increment", dir, key, times }) as const));
		assert.deepEqual(kept, [times, times, times], "every merge found the session");
		const total = defaultCodec.decode((await store.get(key))!.data.n!);
		assert.equal(total, 3 * times, `the session counts ${String(total)} of ${3 * times} increments`);
		await store.close();
	});

	/** A child process that holds `key`'s lock (the worker's "hold" job) until `release()`; resolves once it holds it. */
	async function holdLock(dir: string, key: string): Promise<{ worker: Worker; release(): Promise<void> }> {
		const held = join(root, `held-${n}`);
		const release = join(root, `release-${n++}`);
		const worker = startWorker({ kind: "hold", dir, key, held, release });
		await worker.ready;
		worker.go();
		const deadline = Date.now() + WORKER_DEADLINE_MS;
		while (!existsSync(held)) {
			assert.ok(Date.now() < deadline, "the worker took the lock");
			await sleep(10);
		}
		return { worker, release: () => writeFile(release, "") };
	}

	const increment = () => noChanges({ increment: { n: 1 } });
	const lockOf = (dir: string, key: string) => join(dir, key.slice(0, 2), `${key}.json.lock`);

	it("takes the lock of a process killed while holding it at once, not after the 10 s a lock of unknown holder takes", { timeout: 60_000 }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0, lockTimeout: 5 });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const { worker } = await holdLock(dir, key);
		worker.kill("SIGKILL");
		await assert.rejects(worker.done, /signal SIGKILL/);
		assert.ok((await stat(lockOf(dir, key))).isDirectory(), "the dead process left its lock");

		const started = Date.now();
		assert.equal(await store.merge(key, increment(), Date.now() + HOUR), true);
		const waited = Date.now() - started;
		assert.ok(waited < 1000, `the next write waited ${waited} ms for a dead process's lock`);
		assert.equal((await store.get(key))?.data.n, "1", "the killed process wrote nothing");
		await store.close();
	});

	it("never takes over the lock of a live process, however old (a stopped process), and names it when giving up", { timeout: 60_000 }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0, lockTimeout: 0.5 });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const holder = await holdLock(dir, key);
		const lock = lockOf(dir, key);
		holder.worker.kill("SIGSTOP");
		try {
			// As old as the lock of a process stopped for a minute: past the 10 s after which a lock
			// whose holder cannot be checked counts as left by a crash.
			const minuteAgo = new Date(Date.now() - 60_000);
			await utimes(lock, minuteAgo, minuteAgo);
			await assert.rejects(
				store.merge(key, increment(), Date.now() + HOUR),
				(error: unknown) => error instanceof SessionStoreError && error.message.includes(`${lock} is held by process ${holder.worker.pid} on ${hostname()}`),
			);
			assert.equal(await store.gc(), 0);
			assert.ok((await stat(lock)).isDirectory(), "neither a write nor gc took the stopped process's lock");
		} finally {
			holder.worker.kill("SIGCONT");
		}
		await holder.release();
		assert.equal(await holder.worker.done, 1, "the stopped process's merge went through once it ran again");
		assert.equal(await store.merge(key, increment(), Date.now() + HOUR), true);
		assert.equal((await store.get(key))?.data.n, "2", "both increments are kept");
		await store.close();
	});

	it("never brings back a session one process deletes while another merges it", { timeout: 60_000 }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const keys = Array.from({ length: 100 }, randomKey);
		await Promise.all(keys.map((key) => store.set(key, makeRecord({ data: {} }), Date.now() + HOUR)));
		await runInProcesses([
			// Each key's merges run back to back, so a delete lands between a merge's read and its write.
			{ kind: "merge", dir, keys, rounds: 10 },
			{ kind: "delete", dir, keys },
		]);
		const back = (await Promise.all(keys.map((key) => store.get(key)))).filter((record) => record !== null).length;
		assert.equal(back, 0, `${back} of ${keys.length} deleted sessions came back`);
		assert.equal(await store.count(), 0);
		await store.close();
	});
});
