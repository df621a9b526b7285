/**
 * The file store shared by several processes on one directory (node cluster, pm2 workers): real
 * child processes, each with its own file store on the same `dir`, released at the same moment.
 */
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { defaultCodec } from "sessionkit";
import { fileStore } from "sessionkit/stores/file";
import { makeRecord } from "sessionkit/testing";
import type { FileStoreJob, WorkerMessage } from "../helpers/file-store-worker.js";
import { randomKey } from "../helpers/keys.js";

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
	return { ready: Promise.race([ready, done.then(() => {})]), done, go: () => void child.send("go") };
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
