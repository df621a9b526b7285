import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defaultCodec, SessionConfigError, SessionStoreError } from "sessionkit";
import { fileStore } from "sessionkit/stores/file";
import { randomKey, sleep } from "../helpers/keys.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";

const HOUR = 3_600_000;

storeConformance(
	"file",
	async () => {
		const dir = await mkdtemp(join(tmpdir(), "sessionkit-file-"));
		const store = fileStore({ dir });
		return {
			store,
			async cleanup() {
				await store.close();
				await rm(dir, { recursive: true, force: true });
			},
		};
	},
	{ merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 },
);

/** Every file under `dir`, as paths relative to it. */
async function tree(dir: string): Promise<string[]> {
	return (await readdir(dir, { recursive: true })).sort();
}

describe("file store", () => {
	let root: string;
	let n = 0;
	/** A fresh, not yet existing store directory inside the per-run temp dir. */
	const freshDir = () => join(root, `store-${n++}`);

	before(async () => {
		root = await mkdtemp(join(tmpdir(), "sessionkit-file-"));
	});
	after(async () => {
		await rm(root, { recursive: true, force: true });
	});

	it("refuses a missing dir or a bad gcInterval, at construction", () => {
		assert.throws(() => fileStore({} as never), (error: unknown) => error instanceof SessionConfigError && error.option === "dir");
		assert.throws(() => fileStore({ dir: "" }), SessionConfigError);
		for (const gcInterval of [-1, Number.NaN, 30 * 86_400]) {
			assert.throws(() => fileStore({ dir: freshDir(), gcInterval }), SessionConfigError, String(gcInterval));
		}
	});

	it("refuses a bad lockTimeout, at construction", () => {
		for (const lockTimeout of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 30 * 86_400]) {
			assert.throws(
				() => fileStore({ dir: freshDir(), lockTimeout: lockTimeout as number }),
				(error: unknown) => error instanceof SessionConfigError && error.option === "lockTimeout",
				String(lockTimeout),
			);
		}
		fileStore({ dir: freshDir(), lockTimeout: 0.05, gcInterval: 0 });
	});

	it("refuses an option it does not know (a typo would otherwise do nothing), naming it and the known ones", () => {
		for (const typo of ["gcIntervall", "lock_timeout", "directory"]) {
			assert.throws(
				() => fileStore({ dir: freshDir(), gcInterval: 0, [typo]: 1 } as never),
				(error: unknown) =>
					error instanceof SessionConfigError &&
					error.option === typo &&
					error.message === `sessionkit: option "${typo}" is not an option of fileStore. Known: dir, gcInterval, lockTimeout, clock.`,
			);
		}
	});

	it("quotes a string where an option wants a number, so it cannot pass for one", () => {
		const cases: Array<[Record<string, unknown>, RegExp]> = [
			[{ dir: freshDir(), gcInterval: "300" }, /option "gcInterval" must be .*, got "300"\.$/],
			[{ dir: freshDir(), lockTimeout: "5" }, /option "lockTimeout" must be .*, got "5"\.$/],
			[{ dir: 5n }, /option "dir" must be a non-empty directory path, got bigint\.$/],
		];
		for (const [options, message] of cases) assert.throws(() => fileStore(options as never), (error: unknown) => error instanceof SessionConfigError && message.test(error.message));
	});

	it("never turns a hostile key into a path, inside or outside dir", async () => {
		const parent = join(root, `hostile-${n++}`);
		const dir = join(parent, "sessions");
		await mkdir(dir, { recursive: true });
		const store = fileStore({ dir, gcInterval: 0 });
		const real = randomKey();
		const hostile = [
			"../escaped",
			`../${real}`,
			`${real.slice(0, 2)}/../../${real.slice(6)}xxxx`,
			`/tmp/${real}`,
			real.toUpperCase(),
			`${real}.json`,
			`${real}\u0000`,
			`${real}/`,
			"",
		];
		for (const key of hostile) {
			await assert.rejects(store.set(key, makeRecord(), Date.now() + HOUR), SessionStoreError, JSON.stringify(key));
			assert.equal(await store.get(key), null);
			assert.equal(await store.replace(key, makeRecord(), Date.now() + HOUR), false);
			assert.equal(await store.merge(key, noChanges({ set: { a: "1" } }), Date.now() + HOUR), false);
			await store.touch(key, Date.now() + HOUR, Date.now() + HOUR);
			await store.delete(key);
		}
		assert.deepEqual(await readdir(parent), ["sessions"], "nothing was written beside dir");
		assert.deepEqual(await tree(dir), [], "nothing was written inside dir");
	});

	it("shards files by the first two hex characters of the key, readable by the owner only", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() + HOUR);
		const shard = key.slice(0, 2);
		assert.deepEqual(await tree(dir), [shard, join(shard, `${key}.json`)]);
		assert.equal((await stat(join(dir, shard, `${key}.json`))).mode & 0o777, 0o600);
		assert.equal((await stat(join(dir, shard))).mode & 0o777, 0o700);
		await store.delete(key);
		assert.deepEqual(await tree(dir), [shard]);
	});

	it("keeps the old record readable when a crash left a half-written temp file, and gc removes stale ones", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord();
		await store.set(key, record, Date.now() + HOUR);
		const shard = join(dir, key.slice(0, 2));
		const stale = join(shard, `${key}.json.00112233aabbccdd.tmp`);
		const fresh = join(shard, `${key}.json.44556677eeff0011.tmp`);
		await writeFile(stale, '{"expiresAt":9999999999999,"record":{"da');
		await writeFile(fresh, '{"expiresAt":9999999999999,"record":{"da');
		const hourAgo = new Date(Date.now() - HOUR);
		await utimes(stale, hourAgo, hourAgo);

		assert.deepEqual(await store.get(key), record);
		const next = makeRecord({ data: { v: defaultCodec.encode(2) } });
		await store.set(key, next, Date.now() + HOUR);
		assert.deepEqual(await store.get(key), next, "a later write is not blocked by the stray temp file");

		assert.equal(await store.gc(), 0, "temp files are not counted as sessions");
		const left = await readdir(shard);
		assert.ok(!left.includes(`${key}.json.00112233aabbccdd.tmp`), "a stale temp file is removed");
		assert.ok(left.includes(`${key}.json.44556677eeff0011.tmp`), "a fresh one may belong to a write in progress");
	});

	it("removes its temp file when a write fails midway (disk full), so a failed write takes no space", { skip: process.platform === "win32" }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord();
		await store.set(key, record, Date.now() + HOUR);
		// A child whose files may not pass about 1 MB (ulimit -f) fails a 4 MB write midway with
		// EFBIG, after the temp file was created and partly written, as a full disk does with ENOSPC.
		const script = `
			process.on("SIGXFSZ", () => {});
			const { SessionStoreError } = await import("sessionkit");
			const { fileStore } = await import("sessionkit/stores/file");
			const [dir, key, record] = process.argv.slice(1);
			const store = fileStore({ dir, gcInterval: 0 });
			try {
				const big = JSON.parse(record);
				big.data.big = JSON.stringify("x".repeat(4_000_000));
				await store.set(key, big, Date.now() + 3_600_000);
				console.log(JSON.stringify({ stored: true }));
			} catch (error) {
				console.log(JSON.stringify({ storeError: error instanceof SessionStoreError, message: error.message }));
			}
		`;
		const { stdout } = await promisify(execFile)(
			"/bin/sh",
			["-c", 'ulimit -f 2048 && exec "$@"', "sh", process.execPath, "--conditions=sessionkit-source", "--import", "tsx", "--input-type=module", "-e", script, dir, key, JSON.stringify(record)],
			{ maxBuffer: 1 << 20 },
		);
		const outcome = JSON.parse(stdout) as { stored?: boolean; storeError?: boolean; message?: string };
		assert.equal(outcome.storeError, true, stdout);
		assert.match(outcome.message ?? "", /EFBIG/);
		assert.deepEqual(await tree(dir), [key.slice(0, 2), join(key.slice(0, 2), `${key}.json`)], "no temp file (nor lock) is left behind");
		assert.deepEqual(await store.get(key), record, "the old record is intact");
		await store.close();
	});

	it("treats an unreadable session file as no session, and gc removes it", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() + HOUR);
		await writeFile(join(dir, key.slice(0, 2), `${key}.json`), "");
		assert.equal(await store.get(key), null);
		assert.equal(await store.merge(key, noChanges({ set: { a: "1" } }), Date.now() + HOUR), false);
		assert.equal(await store.gc(), 1);
		assert.deepEqual(await tree(dir), [key.slice(0, 2)]);
	});

	/** A key in the same shard as `key`. */
	const keyInShard = (key: string) => key.slice(0, 2) + randomKey().slice(2);

	it("skips, in every scan, an entry it cannot read (a directory, a symlink loop), does the rest, and leaves the entry in place", async () => {
		const dir = freshDir();
		let now = Date.now();
		const store = fileStore({ dir, gcInterval: 0, clock: () => now });
		const [first, other] = [randomKey(), randomKey()];
		const [expired, asDirectory, asLoop] = [keyInShard(first), keyInShard(first), keyInShard(first)];
		await store.set(expired, makeRecord({ subject: "ada" }), now + 1000);
		for (const key of [first, other]) await store.set(key, makeRecord({ subject: "ada" }), now + HOUR);
		const shard = join(dir, first.slice(0, 2));
		await mkdir(join(shard, `${asDirectory}.json`));
		await symlink(`${asLoop}.json`, join(shard, `${asLoop}.json`));
		now += 2000;

		assert.equal(await store.count(), 2);
		assert.deepEqual((await store.listBySubject("ada")).map((s) => s.key).sort(), [first, other].sort());
		assert.equal(await store.gc(), 1, "the expired session is removed");
		assert.equal(await store.deleteBySubject("ada"), 2);
		assert.equal(await store.count(), 0);
		assert.deepEqual(await tree(dir), [first.slice(0, 2), other.slice(0, 2), join(first.slice(0, 2), `${asDirectory}.json`), join(first.slice(0, 2), `${asLoop}.json`)].sort());
		// Such an entry is never a session: loading it still fails closed.
		await assert.rejects(store.get(asDirectory), SessionStoreError);
		await store.close();
	});

	it("skips, in every scan, a session file it may not read (permission denied) and leaves it alone", { skip: process.getuid?.() === 0 ? "root reads a file of mode 000" : false }, async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const [locked, readable] = [randomKey(), randomKey()];
		for (const key of [locked, readable]) await store.set(key, makeRecord({ subject: "ada" }), Date.now() + HOUR);
		const lockedFile = join(dir, locked.slice(0, 2), `${locked}.json`);
		await chmod(lockedFile, 0o000);
		try {
			assert.deepEqual((await store.listBySubject("ada")).map((s) => s.key), [readable]);
			assert.equal(await store.gc(), 0);
			assert.equal(await store.deleteBySubject("ada"), 1);
		} finally {
			await chmod(lockedFile, 0o600);
		}
		assert.ok(await store.get(locked), "the session nobody could read is still there");
		await store.close();
	});

	it("lets gc remove a corrupt session file without touching the others in its shard", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const live = randomKey();
		const [truncated, garbage] = [keyInShard(live), keyInShard(live)];
		for (const key of [live, truncated, garbage]) await store.set(key, makeRecord(), Date.now() + HOUR);
		const fileOf = (key: string) => join(dir, key.slice(0, 2), `${key}.json`);
		await writeFile(fileOf(truncated), (await readFile(fileOf(truncated), "utf8")).slice(0, 20));
		await writeFile(fileOf(garbage), Buffer.from([0xff, 0xfe, 0x00, 0x7b]));
		assert.equal(await store.count(), 1);
		assert.equal(await store.gc(), 2);
		assert.ok(await store.get(live));
		assert.deepEqual(await tree(dir), [live.slice(0, 2), join(live.slice(0, 2), `${live}.json`)]);
		await store.close();
	});

	it("treats a session file of well-formed JSON but another shape (edited by hand) as no session, and gc removes it", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const far = Date.now() + HOUR;
		const bodies = [
			{ expiresAt: far, record: {} },
			{ expiresAt: far, record: [] },
			{ expiresAt: far, record: { ...makeRecord(), data: null } },
			{ expiresAt: far, record: { ...makeRecord(), flash: [] } },
			{ expiresAt: far, record: { ...makeRecord(), createdAt: "yesterday" } },
			{ expiresAt: far, record: { ...makeRecord(), subject: 7 } },
		];
		for (const body of bodies) {
			const key = randomKey();
			await store.set(key, makeRecord(), far);
			await writeFile(join(dir, key.slice(0, 2), `${key}.json`), JSON.stringify(body));
			assert.equal(await store.get(key), null, JSON.stringify(body));
			assert.equal(await store.merge(key, noChanges({ set: { a: "1" } }), far), false);
		}
		assert.equal(await store.gc(), bodies.length);
		assert.equal((await tree(dir)).filter((name) => name.endsWith(".json")).length, 0);
	});

	it("keeps sessions across a restart (a new store on the same dir)", async () => {
		const dir = freshDir();
		const first = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ subject: "restart-user" });
		await first.set(key, record, Date.now() + HOUR);
		await first.close();

		const second = fileStore({ dir, gcInterval: 0 });
		assert.deepEqual(await second.get(key), record);
		assert.equal(await second.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		assert.equal((await second.get(key))?.data.n, "1");
		assert.deepEqual((await second.listBySubject("restart-user")).map((s) => s.key), [key]);
		assert.equal(await second.count(), 1);
		await second.close();
	});

	it("serialises writes to one key in this process, so a delete is never undone by a slower merge", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const merges = Array.from({ length: 10 }, () => store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR));
		const deletion = store.delete(key);
		const late = store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR);
		assert.deepEqual(await Promise.all(merges), Array(10).fill(true));
		await deletion;
		assert.equal(await late, false);
		assert.equal(await store.get(key), null);
		await store.close();
	});

	it("serialises writes to one key across two stores on the same dir, in this process", async () => {
		const dir = freshDir();
		// Two createSessions on one dir, or a hot-reloaded module: the second store names the dir its own way.
		const a = fileStore({ dir, gcInterval: 0 });
		const b = fileStore({ dir: `${dir}/./`, gcInterval: 0 });
		const key = randomKey();
		await a.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR)));
		assert.equal((await a.get(key))?.data.n, "20", "every increment through either store is kept");

		let broughtBack = 0;
		for (let i = 0; i < 20; i++) {
			const destroyed = randomKey();
			await a.set(destroyed, makeRecord({ data: {} }), Date.now() + HOUR);
			const slow = b.merge(destroyed, noChanges({ set: { late: "1" } }), Date.now() + HOUR);
			await a.delete(destroyed);
			await slow;
			if (await b.get(destroyed)) broughtBack++;
		}
		assert.equal(broughtBack, 0, "a merge through one store never brings back a session deleted through the other");
		await Promise.all([a.close(), b.close()]);
	});

	it("writes nothing until the first session, and reads an empty or missing dir as no sessions", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		assert.equal(await store.get(randomKey()), null);
		// No session file can exist without its shard directory, so these take no lock either.
		assert.equal(await store.merge(randomKey(), noChanges({ set: { a: "1" } }), Date.now() + HOUR), false);
		assert.equal(await store.replace(randomKey(), makeRecord(), Date.now() + HOUR), false);
		await store.touch(randomKey(), Date.now() + HOUR, Date.now() + HOUR);
		await store.delete(randomKey());
		assert.equal(await store.count(), 0);
		assert.deepEqual(await store.listBySubject("nobody"), []);
		assert.equal(await store.deleteBySubject("nobody"), 0);
		assert.equal(await store.gc(), 0);
		await assert.rejects(stat(dir), { code: "ENOENT" });
	});

	it("starts its gc timer unref'd, so it never keeps the process alive", async () => {
		const timers = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length;
		const before = timers();
		const store = fileStore({ dir: freshDir() });
		assert.equal(timers(), before);
		await store.close();
	});

	it("runs gc on its timer every gcInterval seconds", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0.05 });
		const expiring = randomKey();
		const live = randomKey();
		await store.set(expiring, makeRecord(), Date.now() + 20);
		await store.set(live, makeRecord(), Date.now() + HOUR);
		await sleep(300);
		assert.deepEqual(
			(await tree(dir)).filter((name) => name.endsWith(".json")),
			[join(live.slice(0, 2), `${live}.json`)],
			"the timer deleted the expired file and kept the live one",
		);
		await store.close();
	});

	/** A store on a fresh dir of `count` sessions, all expired, whose clock calls `onCall` with its call count. */
	async function expiredSessions(count: number, gcInterval: number, onCall: (calls: number) => void) {
		const dir = freshDir();
		const filler = fileStore({ dir, gcInterval: 0 });
		for (let i = 0; i < count; i++) await filler.set(randomKey(), makeRecord(), Date.now() - 1000);
		await filler.close();
		let calls = 0;
		const store = fileStore({
			dir,
			gcInterval,
			clock: () => {
				onCall(++calls);
				return Date.now();
			},
		});
		const sessionFiles = async () => (await tree(dir)).filter((name) => name.endsWith(".json")).length;
		const leftovers = async () => (await tree(dir)).filter((name) => /\.(lock|breaking|tmp|owner)$/.test(name));
		return { store, sessionFiles, leftovers };
	}

	it("close() stops a gc run of its timer instead of waiting for the whole scan, and leaves nothing half-done", async () => {
		let closing: Promise<void> | undefined;
		// gc reads the clock for each session it looks at: on the 20th, the app shuts down.
		const { store, sessionFiles, leftovers } = await expiredSessions(100, 0.05, (calls) => {
			if (calls === 20) closing = store.close();
		});
		while (!closing) await sleep(5);
		await closing;
		const left = await sessionFiles();
		assert.ok(left > 80, `close() let gc delete ${100 - left} of 100 sessions`);
		assert.deepEqual(await leftovers(), [], "no lock or temp file is left");
		await sleep(100);
		assert.equal(await sessionFiles(), left, "nothing of the store runs after close()");
	});

	it("close() stops a gc() call in progress too, which resolves with what it deleted", async () => {
		let closing: Promise<void> | undefined;
		const { store, sessionFiles, leftovers } = await expiredSessions(100, 0, (calls) => {
			if (calls === 20) closing = store.close();
		});
		let collected: number | undefined;
		const gc = store.gc().then((deleted) => (collected = deleted));
		while (!closing) await sleep(5);
		await closing;
		assert.notEqual(collected, undefined, "gc() settled before close() resolved");
		assert.equal(await sessionFiles(), 100 - collected!);
		assert.ok(collected! < 20, `gc() deleted ${collected} of 100 sessions`);
		assert.deepEqual(await leftovers(), []);
		await gc;
		// A gc() called after close() runs in full.
		assert.equal(await store.gc(), 100 - collected!);
	});

	it("checks expiry against the injected clock", async () => {
		let now = Date.UTC(2026, 0, 1);
		const store = fileStore({ dir: freshDir(), gcInterval: 0, clock: () => now });
		const key = randomKey();
		await store.set(key, makeRecord(), now + 1000);
		assert.ok(await store.get(key));
		now += 1000;
		assert.equal(await store.get(key), null);
		assert.equal(await store.gc(), 1);
	});

	it("writes plain JSON that names its expiry", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord();
		const expiresAt = Date.now() + HOUR;
		await store.set(key, record, expiresAt);
		const content: unknown = JSON.parse(await readFile(join(dir, key.slice(0, 2), `${key}.json`), "utf8"));
		assert.deepEqual(content, { expiresAt, record });
	});
});

describe("file store locks (one per session file, against other processes)", () => {
	let root: string;
	let n = 0;
	const freshDir = () => join(root, `store-${n++}`);
	const minuteAgo = () => new Date(Date.now() - 60_000);
	const lockOf = (dir: string, key: string) => join(dir, key.slice(0, 2), `${key}.json.lock`);

	/** A store on a fresh dir holding one session, and that session's lock path. */
	async function storeWithSession(lockTimeout: number) {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0, lockTimeout });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		return { dir, store, key, lock: lockOf(dir, key) };
	}

	before(async () => {
		root = await mkdtemp(join(tmpdir(), "sessionkit-file-locks-"));
	});
	after(async () => {
		await rm(root, { recursive: true, force: true });
	});

	it("takes the lock only while it writes: none is left behind", async () => {
		const { dir, store, key } = await storeWithSession(1);
		await Promise.all(Array.from({ length: 10 }, () => store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR)));
		assert.equal((await store.get(key))?.data.n, "10");
		assert.deepEqual(await tree(dir), [key.slice(0, 2), join(key.slice(0, 2), `${key}.json`)]);
		await store.delete(key);
		assert.deepEqual(await tree(dir), [key.slice(0, 2)]);
		await store.close();
	});

	it("waits while another process holds the lock, and writes once it is released", async () => {
		const { store, key, lock } = await storeWithSession(5);
		await mkdir(lock);
		const started = Date.now();
		setTimeout(() => void rmdir(lock), 100);
		assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		assert.ok(Date.now() - started >= 90, `waited ${Date.now() - started} ms for the lock`);
		assert.equal((await store.get(key))?.data.n, "1");
		await store.close();
	});

	it("gives up on a fresh lock held by someone else after lockTimeout, with SessionStoreError naming the lock", async () => {
		const { store, key, lock } = await storeWithSession(0.1);
		const record = await store.get(key);
		await mkdir(lock);
		const writes: Array<[string, () => Promise<unknown>]> = [
			["set", () => store.set(key, makeRecord(), Date.now() + HOUR)],
			["merge", () => store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR)],
			["replace", () => store.replace(key, makeRecord(), Date.now() + HOUR)],
			["touch", () => store.touch(key, Date.now() + HOUR, Date.now() + HOUR)],
			["delete", () => store.delete(key)],
		];
		for (const [name, write] of writes) {
			const started = Date.now();
			await assert.rejects(
				write(),
				(error: unknown) =>
					error instanceof SessionStoreError &&
					error.message.includes("a lock on the session file could not be taken within 100 ms") &&
					error.message.includes(lock),
				name,
			);
			const waited = Date.now() - started;
			assert.ok(waited >= 95 && waited < 2000, `${name} waited ${waited} ms`);
		}
		assert.deepEqual(await store.get(key), record, "reads take no lock, and nothing was written");
		assert.ok((await stat(lock)).isDirectory(), "someone else's fresh lock is left alone");
		await rmdir(lock);
		assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		await store.close();
	});

	it("breaks a stale lock (left by a crashed process) instead of waiting for it", async () => {
		const { dir, store, key, lock } = await storeWithSession(0.5);
		await mkdir(lock);
		await utimes(lock, minuteAgo(), minuteAgo());
		// Within lockTimeout (0.5 s): a lock this old is not waited for.
		assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		assert.equal((await store.get(key))?.data.n, "1");

		// A crash while breaking it left the breaker behind too: both stale, both cleared.
		await mkdir(lock);
		await mkdir(`${lock}.breaking`);
		for (const path of [lock, `${lock}.breaking`]) await utimes(path, minuteAgo(), minuteAgo());
		await store.set(key, makeRecord(), Date.now() + HOUR);
		assert.deepEqual(await tree(dir), [key.slice(0, 2), join(key.slice(0, 2), `${key}.json`)]);
		await store.close();
	});

	it("leaves a stale lock to the waiter that is already breaking it", async () => {
		const { store, key, lock } = await storeWithSession(0.1);
		await mkdir(lock);
		await utimes(lock, minuteAgo(), minuteAgo());
		// A fresh breaker: another process is removing the stale lock and will take the key next.
		await mkdir(`${lock}.breaking`);
		await assert.rejects(store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), SessionStoreError);
		assert.ok((await stat(lock)).isDirectory(), "the lock is not removed behind the breaker's back");
		await store.close();
	});

	it("gc removes stale lock leftovers, keeps fresh ones, and never counts a lock as a session", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0 });
		const live = randomKey();
		const expired = randomKey();
		await store.set(live, makeRecord({ subject: "gc-user" }), Date.now() + HOUR);
		await store.set(expired, makeRecord({ subject: "gc-user" }), Date.now() + 1);
		const orphan = randomKey(); // a lock whose session file was never written
		const stale = [`${lockOf(dir, live)}.breaking`, lockOf(dir, expired), lockOf(dir, orphan), `${lockOf(dir, orphan)}.breaking`];
		const freshLock = lockOf(dir, randomKey());
		for (const path of [...stale, freshLock]) await mkdir(path, { recursive: true });
		for (const path of stale) await utimes(path, minuteAgo(), minuteAgo());
		await sleep(5);

		assert.equal(await store.count(), 1, "count sees one live session among the locks");
		assert.deepEqual((await store.listBySubject("gc-user")).map((session) => session.key), [live]);
		assert.equal(await store.gc(), 1, "only the expired session is counted");
		for (const path of stale) await assert.rejects(stat(path), { code: "ENOENT" }, path);
		assert.ok((await stat(freshLock)).isDirectory(), "a fresh lock may belong to a write in progress");
		assert.ok(await store.get(live));
		assert.equal(await store.deleteBySubject("gc-user"), 1);
		await store.close();
	});

	it("keeps the age rule for a lock another host holds (a shared folder), naming that host when giving up", async () => {
		const { store, key, lock } = await storeWithSession(0.1);
		await mkdir(lock);
		// No such pid here may exist, but it is another host's: only its age tells.
		await writeFile(join(lock, "0011223344556677.owner"), JSON.stringify({ pid: 2 ** 30, host: `not-${hostname()}`, space: "", start: null }));
		await assert.rejects(
			store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR),
			(error: unknown) => error instanceof SessionStoreError && error.message.includes(`${lock} is held by process ${2 ** 30} on not-${hostname()}.`),
		);
		await utimes(lock, minuteAgo(), minuteAgo());
		assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		await store.close();
	});

	it("keeps the age rule for a lock of this very process (a worker thread terminated while holding it), and for a pid it cannot check", async () => {
		const stat = readFileSync("/proc/self/stat", "utf8");
		const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
		const space = `${readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()} ${readlinkSync("/proc/self/ns/pid")}`;
		const owners = [
			{ pid: process.pid, host: hostname(), space, start }, // this process: another thread's, maybe gone
			{ pid: process.ppid, host: hostname(), space, start: null }, // a live pid without a start time: perhaps reused
		];
		for (const owner of owners) {
			const { store, key, lock } = await storeWithSession(0.1);
			await mkdir(lock);
			await writeFile(join(lock, "8899aabbccddeeff.owner"), JSON.stringify(owner));
			await assert.rejects(store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), SessionStoreError, "a young lock is waited for");
			await utimes(lock, minuteAgo(), minuteAgo());
			assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true, `broken once old: ${JSON.stringify(owner)}`);
			await store.close();
		}
	});

	it("gc passes over a session whose lock is held past lockTimeout, collects the others, and that one next time", async () => {
		const dir = freshDir();
		let now = Date.now();
		const store = fileStore({ dir, gcInterval: 0, lockTimeout: 0.1, clock: () => now });
		const keys = [randomKey(), randomKey(), randomKey()];
		for (const key of keys) await store.set(key, makeRecord(), now + 1000);
		now += 2000;
		const busy = lockOf(dir, keys[1]!);
		await mkdir(busy);
		assert.equal(await store.gc(), 2);
		assert.deepEqual((await tree(dir)).filter((name) => name.endsWith(".json")), [join(keys[1]!.slice(0, 2), `${keys[1]}.json`)]);
		await rmdir(busy);
		assert.equal(await store.gc(), 1);
		await store.close();
	});

	it("deleteBySubject waits for a held lock after deleting the others, and if it stays held rejects saying how many it could not delete", async () => {
		const dir = freshDir();
		const store = fileStore({ dir, gcInterval: 0, lockTimeout: 0.3 });
		const mine = [randomKey(), randomKey(), randomKey()];
		const other = randomKey();
		for (const key of mine) await store.set(key, makeRecord({ subject: "ada" }), Date.now() + HOUR);
		await store.set(other, makeRecord({ subject: "bob" }), Date.now() + HOUR);
		const busy = lockOf(dir, mine[0]!);

		// Held for a moment (a request in progress): waited for, and deleted too.
		await mkdir(busy);
		setTimeout(() => void rmdir(busy), 100);
		assert.equal(await store.deleteBySubject("ada"), 3);

		for (const key of mine) await store.set(key, makeRecord({ subject: "ada" }), Date.now() + HOUR);
		await mkdir(busy);
		await assert.rejects(
			store.deleteBySubject("ada"),
			(error: unknown) =>
				error instanceof SessionStoreError &&
				error.message.includes("deleted 2 sessions but could not delete 1") &&
				error.message.includes(busy),
		);
		assert.deepEqual((await store.listBySubject("ada")).map((session) => session.key), [mine[0]], "every other session of the subject is gone");
		assert.ok(await store.get(other), "another subject's session is kept");
		await rmdir(busy);
		assert.equal(await store.deleteBySubject("ada"), 1);
		await store.close();
	});

	it("makes two stores on one dir under two names (a symlink) take turns too", async () => {
		const dir = freshDir();
		await mkdir(dir);
		const alias = `${dir}-alias`;
		await symlink(dir, alias, "dir");
		// Their in-process queues differ (the paths do), so only the lock keeps them apart.
		const a = fileStore({ dir, gcInterval: 0 });
		const b = fileStore({ dir: alias, gcInterval: 0 });
		const key = randomKey();
		await a.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR)));
		assert.equal((await a.get(key))?.data.n, "40");
		await Promise.all([a.close(), b.close()]);
	});
});

describe("file store lock release", () => {
	let root: string;
	before(async () => {
		root = await mkdtemp(join(tmpdir(), "sessionkit-file-release-"));
	});
	after(async () => {
		await rm(root, { recursive: true, force: true });
	});

	it("does not turn a write that happened, or the write's own error, into the error of removing its lock", async () => {
		const dir = join(root, "store");
		const key = randomKey();
		const lock = join(dir, key.slice(0, 2), `${key}.json.lock`);
		// The clock is read under the lock (the live-record check); on cue it leaves a file in the
		// lock directory, so removing the lock fails (ENOTEMPTY), as a Windows EPERM/EBUSY would.
		let jam = false;
		let breakFile: string | undefined;
		const store = fileStore({
			dir,
			gcInterval: 0,
			clock: () => {
				if (jam) writeFileSync(join(lock, "jam"), "");
				if (breakFile !== undefined) {
					rmSync(breakFile, { force: true });
					mkdirSync(join(breakFile, "x"), { recursive: true });
				}
				return Date.now();
			},
		});
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		jam = true;
		assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
		jam = false;
		assert.equal((await store.get(key))?.data.n, "1", "the merge was applied once, and said so");
		await rm(lock, { recursive: true, force: true });

		// A write that fails (its file turned into a directory) reports its own error, not the lock's.
		const file = join(dir, key.slice(0, 2), `${key}.json`);
		jam = true;
		breakFile = file;
		await assert.rejects(
			store.merge(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR),
			(error: unknown) => error instanceof SessionStoreError && /EISDIR/.test(error.message),
		);
		jam = false;
		breakFile = undefined;
		await rm(lock, { recursive: true, force: true });
		await rm(file, { recursive: true, force: true });
		await store.close();
	});
});
