import assert from "node:assert/strict";
import { errorMonitor } from "node:events";
import { after, before, describe, it } from "node:test";
import { Cluster, Redis } from "ioredis";
import type { ClusterOptions } from "ioredis";
import { SessionConfigError, SessionStoreError, applyChanges, defaultCodec } from "sessionkit";
import { redisStore } from "sessionkit/stores/redis";
import { eventually, freePort, hasCommand, startChildServer } from "../helpers/child-server.js";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { startTcpProxy } from "../helpers/tcp-proxy.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";
import { requireService, serviceURL } from "../services.js";

const HOUR = 3_600_000;
const skip = await requireService("redis");
const clusterSkip = await requireService("redis-cluster");

function client(options: { keyPrefix?: string } = {}): Redis {
	const redis = new Redis(serviceURL.redis, { maxRetriesPerRequest: 1, ...options });
	redis.on("error", () => {});
	return redis;
}

/** A new Cluster client: its slot map loads only once it has connected. */
function clusterClient(options: ClusterOptions = {}): Cluster {
	const nodes = serviceURL["redis-cluster"].split(",").map((hostPort) => {
		const [host, port] = hostPort.trim().split(":");
		return { host: host!, port: Number(port) };
	});
	const cluster = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 1 }, ...options });
	cluster.on("error", () => {});
	return cluster;
}

/** The real client, with the name of each method called pushed onto `calls`. */
function countingCalls(redis: Redis, calls: string[]): Redis {
	return new Proxy(redis, {
		get(target, name) {
			const value = Reflect.get(target, name, target) as unknown;
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => {
				calls.push(String(name));
				return (value as (...a: unknown[]) => unknown).apply(target, args);
			};
		},
	});
}

/** Deletes every key under `prefix` (SCAN, never KEYS) and closes the client. */
async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
	let cursor = "0";
	do {
		const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
		cursor = next;
		if (keys.length > 0) await redis.del(...keys);
	} while (cursor !== "0");
	await redis.quit();
}

storeConformance(
	"redis",
	async () => {
		const redis = client();
		const prefix = `sktest:${runId()}:`;
		return { store: redisStore({ client: redis }, { prefix }), cleanup: () => dropPrefix(redis, prefix) };
	},
	{ merge: true, subjects: true, count: true, selfExpiring: true, expiryResolutionMs: 1 },
	{ skip },
);

// ioredis's keyPrefix goes before every key the store sends (the scripts' KEYS included), so
// the whole contract must hold behind one.
storeConformance(
	"redis with an ioredis keyPrefix",
	async () => {
		const keyPrefix = `sktest:${runId()}:kp:`;
		const prefixed = client({ keyPrefix });
		return {
			store: redisStore({ client: prefixed }),
			async cleanup() {
				await prefixed.quit();
				await dropPrefix(client(), keyPrefix);
			},
		};
	},
	{ merge: true, subjects: true, count: true, selfExpiring: true, expiryResolutionMs: 1 },
	{ skip },
);

describe("redis store", () => {
	it("refuses a bad prefix, timeout or connection at construction", () => {
		const fake = { evalsha() {} } as unknown as Redis;
		for (const prefix of ["", "a b", "tab\t", "{tag}:", "x}", "nul\u0000"]) {
			assert.throws(() => redisStore({ client: fake }, { prefix }), SessionConfigError, JSON.stringify(prefix));
		}
		// Past 2147483 s, setTimeout would fire after 1 ms and fail every operation at once.
		for (const timeout of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2_147_484, 3_000_000]) {
			assert.throws(() => redisStore({ client: fake }, { timeout }), SessionConfigError, String(timeout));
		}
		assert.doesNotThrow(() => redisStore({ client: fake }, { timeout: 2_147_483 }));
		assert.throws(() => redisStore({ client: {} as Redis }), SessionConfigError);
		assert.throws(() => redisStore({ url: "" }), SessionConfigError);
	});

	describe("against the server", { skip }, () => {
		let redis: Redis;
		const prefix = `sktest:${runId()}:`;
		before(() => {
			redis = client();
		});
		after(() => dropPrefix(redis, prefix));

		it("keeps a session as one hash whose Redis expiry is the deadline it was given", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const key = randomKey();
			const expiresAt = Date.now() + 90_000;
			await store.set(key, makeRecord({ data: { a: "1" }, flash: { n: "2" }, subject: "s" }), expiresAt);
			assert.equal(await redis.type(`${prefix}{${key}}`), "hash");
			assert.equal(await redis.pexpiretime(`${prefix}{${key}}`), expiresAt);
			assert.deepEqual(Object.keys(await redis.hgetall(`${prefix}{${key}}`)).sort(), ["a", "c", "d:a", "e", "f:n", "i", "s"]);
			const touched = expiresAt + 60_000;
			await store.touch(key, touched, touched);
			assert.equal(await redis.pexpiretime(`${prefix}{${key}}`), touched);
		});

		it("increments like JavaScript numbers: fractions, exponents, and a non-number replaced", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const key = randomKey();
			await store.set(key, makeRecord({ data: { f: "0.1", big: "9007199254740990", text: defaultCodec.encode("abc"), e: "1e21" } }), Date.now() + HOUR);
			await store.merge!(key, noChanges({ increment: { f: 0.2, big: 1, text: 5, e: 1, fresh: 0.5 } }), Date.now() + HOUR);
			const data = (await store.get(key))!.data;
			assert.equal(data.f, String(0.1 + 0.2));
			assert.equal(data.big, String(9007199254740991));
			assert.equal(data.text, "5");
			assert.equal(Number(data.e), 1e21);
			assert.equal(data.fresh, "0.5");
		});

		it("increments whatever text a custom codec stored as applyChanges reads it (JavaScript's Number), where Lua's tonumber reads otherwise", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const texts = [
				// Lua's tonumber and JavaScript's Number() read these differently.
				"-0x10", "+0x10", "0x1p3", "1\u00002", "0b11", "0o17", "0B101", "0O7",
				`0b${"1".repeat(70)}`, `0o${"7".repeat(30)}`, `0x${"f".repeat(40)}`,
				"\u00a05", "\u16805", "\u20005", "\u200a5", "\u20285", "\u20295", "\u202f5", "\u205f5", "5\u3000", "\ufeff5", "\u000b9\u000c",
				// Numbers to neither (U+180E and U+200B are not white space to JavaScript).
				"\u180e5", "\u200b5", "0b", "0b12", "-0b11", "0x1.8", "1e", ".",
				// Both agree on these.
				"0x10", "0X1f", " 12 ", "\t7\n", "", "  ", "012", ".5", "5.", "+5", "-.5e-3", "1E+3", "1e400", "1e-400", "00.5", "Infinity", "-Infinity", "inf", "nan", "0x", "1_0", "12abc", "0.1",
			];
			const data = Object.fromEntries(texts.map((text, n) => [`t${n}`, text]));
			const key = randomKey();
			const record = makeRecord({ data });
			await store.set(key, record, Date.now() + HOUR);
			const changes = noChanges({ increment: Object.fromEntries(texts.map((_, n) => [`t${n}`, 1])) });
			assert.equal(await store.merge!(key, changes, Date.now() + HOUR), true);
			const merged = (await store.get(key))!.data;
			const expected = applyChanges(record, changes).data;
			const wrong = texts.flatMap((text, n) => (merged[`t${n}`] === expected[`t${n}`] ? [] : [`${JSON.stringify(text)}: ${merged[`t${n}`]}, not ${expected[`t${n}`]}`]));
			assert.deepEqual(wrong, []);
		});

		it("reloads its scripts when the server's script cache was flushed", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const key = randomKey();
			await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
			await redis.script("FLUSH");
			assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
			assert.equal((await store.get(key))?.data.n, "1");
			// The two-key script (session and subject index) too.
			await redis.script("FLUSH");
			const subject = `flushed-${runId()}`;
			const withSubject = randomKey();
			await store.set(withSubject, makeRecord({ subject }), Date.now() + HOUR);
			assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key), [withSubject]);
		});

		it("on a standalone server, writes a session and its subject index in one round trip; a replace or merge of a dead session indexes nothing", async () => {
			const calls: string[] = [];
			const counted = countingCalls(redis, calls);
			const store = redisStore({ client: counted }, { prefix });
			// Loads the scripts (a test above flushes the server's script cache), so each call below is one.
			const warm = randomKey();
			await store.set(warm, makeRecord({ subject: `warm-${runId()}` }), Date.now() + HOUR);
			await store.merge!(warm, noChanges({ subject: `warm-${runId()}` }), Date.now() + HOUR);
			calls.length = 0;
			const subject = `one-${runId()}`;
			const key = randomKey();
			await store.set(key, makeRecord({ subject }), Date.now() + HOUR);
			assert.deepEqual(calls, ["evalsha"]);
			assert.deepEqual(await redis.zrange(`${prefix}subject:{${subject}}`, "0", "-1"), [key]);
			assert.equal((await store.get(key))?.subject, subject);

			// A load is one read-only script: a replica may run it, and it is never counted as a write.
			calls.length = 0;
			await store.get(key);
			assert.deepEqual(calls, ["evalsha_ro"]);

			const other = `two-${runId()}`;
			assert.equal(await store.replace(randomKey(), makeRecord({ subject: other }), Date.now() + HOUR), false);
			assert.equal(await redis.exists(`${prefix}subject:{${other}}`), 0);
			assert.equal(await store.replace(key, makeRecord({ subject: other }), Date.now() + HOUR), true);
			assert.deepEqual(await redis.zrange(`${prefix}subject:{${other}}`, "0", "-1"), [key]);

			// A merge that sets the subject: one call too, scored by the stored absolute deadline.
			const third = `three-${runId()}`;
			const absolute = (await store.get(key))!.absoluteExpiresAt;
			calls.length = 0;
			assert.equal(await store.merge!(key, noChanges({ subject: third, increment: { n: 1 } }), Date.now() + HOUR), true);
			assert.deepEqual(calls, ["evalsha"]);
			assert.deepEqual(await redis.zrange(`${prefix}subject:{${third}}`, "0", "-1", "WITHSCORES"), [key, String(absolute)]);
			assert.equal((await store.get(key))?.subject, third);
			const gone = `four-${runId()}`;
			assert.equal(await store.merge!(randomKey(), noChanges({ subject: gone }), Date.now() + HOUR), false);
			assert.equal(await redis.exists(`${prefix}subject:{${gone}}`), 0, "a merge into a missing session indexes nothing");
		});

		it("keeps the subject index alive as long as its longest-lived session, and prunes dead members", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const subject = `sub-${runId()}`;
			const [short, long, gone] = [randomKey(), randomKey(), randomKey()];
			const now = Date.now();
			await store.set(short, makeRecord({ subject, absoluteExpiresAt: now + HOUR }), now + 60_000);
			await store.set(long, makeRecord({ subject, absoluteExpiresAt: now + 5 * HOUR }), now + 60_000);
			await store.set(gone, makeRecord({ subject, absoluteExpiresAt: now + 2 * HOUR }), now + 60_000);
			const index = `${prefix}subject:{${subject}}`;
			assert.equal(await redis.pexpiretime(index), now + 5 * HOUR);
			await store.delete(gone);
			assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key).sort(), [short, long].sort());
			assert.deepEqual((await redis.zrange(index, "0", "-1")).sort(), [short, long].sort(), "the deleted session left the index");
		});

		it("prunes a subject's member only on a check in the same script: a session that moves away and back while it is listed stays findable", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const [alice, bob] = [`alice-${runId()}`, `bob-${runId()}`];
			const H = HOUR;
			for (const operation of ["listBySubject", "deleteBySubject"] as const) {
				const key = randomKey();
				await store.set(key, makeRecord({ subject: alice }), Date.now() + H);
				await store.merge!(key, noChanges({ subject: bob }), Date.now() + H); // an admin impersonates bob...
				// A lister whose prune of the index (any write after it has read the session as bob's) is
				// slow. deleteBySubject's per-session scripts are not held: they read the session themselves.
				let held: (() => void) | undefined;
				const slow = new Proxy(redis, {
					get(target, name) {
						const value = Reflect.get(target, name, target) as unknown;
						if (typeof value !== "function") return value;
						const call = (...args: unknown[]) => (value as (...a: unknown[]) => unknown).apply(target, args);
						if (name !== "zrem" && !(name === "evalsha" && operation === "listBySubject")) return call;
						return async (...args: unknown[]) => {
							await new Promise<void>((resolve) => (held = resolve));
							return call(...args);
						};
					},
				});
				const listing = redisStore({ client: slow }, { prefix })[operation]!(alice);
				for (let waited = 0; held === undefined && waited < 300; waited += 5) await sleep(5);
				if (held === undefined) await listing; // it had nothing left to write once it had read
				await store.merge!(key, noChanges({ subject: alice }), Date.now() + H); // ...and switches back
				held?.();
				await listing;
				assert.deepEqual((await store.listBySubject!(alice)).map((s) => s.key), [key], `${operation}: the session is alice's again, and listed`);
				assert.equal(await store.deleteBySubject!(alice), 1, `${operation}: "log out everywhere" finds it`);
				assert.equal(await store.get(key), null);
			}
		});

		it("deleteBySubject leaves a session that moved to another subject alone", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const [first, second] = [`a-${runId()}`, `b-${runId()}`];
			const key = randomKey();
			await store.set(key, makeRecord({ subject: first }), Date.now() + HOUR);
			await store.merge!(key, noChanges({ subject: second }), Date.now() + HOUR);
			assert.equal(await store.deleteBySubject!(first), 0);
			assert.ok(await store.get(key));
			assert.equal(await store.deleteBySubject!(second), 1);
		});

		it("reads the scripts' answers on a client with ioredis's stringNumbers option (integer replies as strings)", async () => {
			const stringy = new Redis(serviceURL.redis, { maxRetriesPerRequest: 1, stringNumbers: true });
			stringy.on("error", () => {});
			try {
				const store = redisStore({ client: stringy }, { prefix });
				const subject = `strnum-${runId()}`;
				const key = randomKey();
				await store.set(key, makeRecord({ subject }), Date.now() + HOUR);
				assert.equal(await store.replace(key, makeRecord({ subject }), Date.now() + HOUR), true);
				assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
				assert.equal(await store.merge!(key, noChanges({ subject }), Date.now() + HOUR), true);
				assert.equal(await store.replace(randomKey(), makeRecord(), Date.now() + HOUR), false);
				assert.equal(await store.merge!(randomKey(), noChanges(), Date.now() + HOUR), false);
				assert.equal(await store.deleteBySubject!(subject), 1);
				assert.equal(await store.get(key), null);
			} finally {
				stringy.disconnect();
			}
		});

		it("saves and merges a session of 70,000 keys: more arguments than a JavaScript call can spread", async () => {
			const store = redisStore({ client: redis }, { prefix });
			const data = Object.fromEntries(Array.from({ length: 70_000 }, (_, i) => [`k${i}`, String(i)]));
			const key = randomKey();
			await store.set(key, makeRecord({ data }), Date.now() + HOUR);
			assert.equal(Object.keys((await store.get(key))!.data).length, 70_000);
			const merged = randomKey();
			await store.set(merged, makeRecord({ data: {} }), Date.now() + HOUR);
			assert.equal(await store.merge!(merged, noChanges({ set: data }), Date.now() + HOUR), true);
			assert.equal((await store.get(merged))!.data.k69999, "69999");
		});

		it("counts only its own prefix, even one with glob characters", async () => {
			const globPrefix = `${prefix}g*?[x]:`;
			const store = redisStore({ client: redis }, { prefix: globPrefix });
			const other = redisStore({ client: redis }, { prefix: `${prefix}gAB[x]:` });
			await store.set(randomKey(), makeRecord(), Date.now() + HOUR);
			await store.set(randomKey(), makeRecord({ subject: "x" }), Date.now() + HOUR);
			await other.set(randomKey(), makeRecord(), Date.now() + HOUR);
			assert.equal(await store.count!(), 2, "the subject index and the other prefix are not counted");
		});

		it("counts behind an ioredis keyPrefix (which SCAN's MATCH does not get), only its own, even with glob characters", async () => {
			const starred = client({ keyPrefix: `${prefix}kp*:` });
			const plain = client({ keyPrefix: `${prefix}kpX:` });
			try {
				const store = redisStore({ client: starred });
				const key = randomKey();
				await store.set(key, makeRecord(), Date.now() + HOUR);
				await store.set(randomKey(), makeRecord({ subject: "x" }), Date.now() + HOUR);
				await redisStore({ client: plain }).set(randomKey(), makeRecord(), Date.now() + HOUR);
				assert.equal(await redis.exists(`${prefix}kp*:sess:{${key}}`), 1, "ioredis put its keyPrefix before the store's");
				assert.equal(await store.count!(), 2, "the subject index and the other keyPrefix are not counted");
			} finally {
				starred.disconnect();
				plain.disconnect();
			}
		});

		it("a merge whose answer is lost to a dropped connection rejects at once, applied once, never sent again: with { url }, or a client set up as the docs say", async () => {
			const { hostname, port } = new URL(serviceURL.redis);
			const proxy = await startTcpProxy({ host: hostname, port: Number(port || 6379) });
			const proxied = `redis://127.0.0.1:${proxy.port}`;
			const yours = new Redis(proxied, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false });
			yours.on("error", () => {});
			try {
				for (const [form, connection] of [["{ url }", { url: proxied }], ["{ client }", { client: yours }]] as const) {
					const store = redisStore(connection, { prefix, timeout: 2 });
					const key = randomKey();
					const counter = (): Promise<string | null> => redis.hget(`${prefix}{${key}}`, "d:n");
					await store.set(key, makeRecord({ data: { n: "0" } }), Date.now() + HOUR);
					// Loads the script: the merge below is one EVALSHA, which the server runs.
					assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
					const cut = proxy.cutAfterRequest(key);
					const started = Date.now();
					const outcome = await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR).then(
						(merged) => ({ merged }),
						(error: unknown) => ({ error }),
					);
					await cut;
					assert.equal(await counter(), "2", `${form}: the server ran the increment once, and only once`);
					assert.ok("error" in outcome && outcome.error instanceof SessionStoreError, `${form}: the merge whose answer was lost rejects: ${JSON.stringify(outcome)}`);
					// At the drop, not at the store's timeout: a command ioredis does not resend is never answered.
					assert.ok(Date.now() - started < 1000, `${form}: took ${Date.now() - started} ms: ${outcome.error.message}`);
					// ioredis reconnects by itself: the next calls go through, each applied once.
					assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true, form);
					assert.equal((await store.get(key))?.data.n, "3", form);
					assert.equal(await counter(), "3", form);
					await store.close!();
				}
			} finally {
				yours.disconnect();
				await proxy.close();
			}
		});

		it("with { url } connects by itself, and close() quits only that connection", async () => {
			const owned = redisStore({ url: serviceURL.redis }, { prefix });
			const key = randomKey();
			await owned.set(key, makeRecord(), Date.now() + HOUR);
			assert.ok(await owned.get(key));
			await owned.close!();
			await assert.rejects(owned.get(key), SessionStoreError, "its own client is closed");

			const borrowed = redisStore({ client: redis }, { prefix });
			await borrowed.close!();
			assert.ok(await borrowed.get(key), "a client passed in stays open");
		});
	});

	const noServer = skip ?? (hasCommand("redis-server") ? undefined : "redis-server is not installed");
	it("on a server without EVALSHA_RO (before Redis 7), loads with EVALSHA", { skip: noServer }, async () => {
		const port = await freePort();
		// Renaming a command to "" removes it, as on a Redis 6 server.
		const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--rename-command", "EVALSHA_RO", "", "--rename-command", "EVAL_RO", ""];
		const server = await startChildServer("redis-server", args, port);
		const redis = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1 });
		redis.on("error", () => {});
		const calls: string[] = [];
		const counted = countingCalls(redis, calls);
		try {
			const store = redisStore({ client: counted });
			const key = randomKey();
			assert.equal(await store.get(key), null);
			await store.set(key, makeRecord({ data: { n: "1" } }), Date.now() + HOUR);
			assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
			calls.length = 0;
			assert.equal((await store.get(key))?.data.n, "2");
			assert.deepEqual(calls, ["evalsha"], "asks for EVALSHA_RO once, then no more");
		} finally {
			redis.disconnect();
			await server.stop();
		}
	});

	describe("when Redis is down", { skip: noServer }, () => {
		it("rejects with SessionStoreError naming the store within its timeout (nothing ever listened)", async () => {
			const store = redisStore({ url: `redis://127.0.0.1:${await freePort()}` }, { timeout: 1 });
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), (error: unknown) => {
				assert.ok(error instanceof SessionStoreError);
				assert.equal(error.store, "redis");
				assert.match(error.message, /^sessionkit\/redis: get /);
				return true;
			});
			assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
			await store.close!();
		});

		it("names the server, and for a client of its own the connection error, instead of only ioredis's retry limit", async () => {
			const port = await freePort();
			const owned = redisStore({ url: `redis://127.0.0.1:${port}` }, { timeout: 1 });
			try {
				await assert.rejects(owned.get(randomKey()), (error: unknown) => {
					assert.ok(error instanceof SessionStoreError);
					assert.ok(error.message.endsWith(`(Redis at 127.0.0.1:${port}; last connection error: connect ECONNREFUSED 127.0.0.1:${port})`), error.message);
					return true;
				});
			} finally {
				await owned.close!();
			}

			// A client passed in, with the app's own error listener: the same words, and the same cause.
			const yours = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1 });
			const heard: Error[] = [];
			yours.on("error", (error: Error) => heard.push(error));
			try {
				await assert.rejects(redisStore({ client: yours }, { timeout: 1 }).get(randomKey()), (error: unknown) => {
					assert.ok(error instanceof SessionStoreError);
					assert.ok(error.message.endsWith(`(Redis at 127.0.0.1:${port}; last connection error: connect ECONNREFUSED 127.0.0.1:${port})`), error.message);
					assert.equal((error.cause as Error | undefined)?.name, "MaxRetriesPerRequestError", "the cause is ioredis's error, as with { url }");
					return true;
				});
				assert.ok(heard.length > 0, "the app's own listener still hears every error");
				assert.equal(yours.listenerCount("error"), 1, "the store added no error listener of its own");
			} finally {
				yours.disconnect();
			}
		});

		it("on a client passed in without an error listener, leaves ioredis's own report of unhandled errors alone", async () => {
			const port = await freePort();
			const bare = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1, lazyConnect: true });
			const printed: string[] = [];
			const original = console.error;
			console.error = (...args: unknown[]) => {
				printed.push(args.map(String).join(" "));
			};
			try {
				// Several stores on one client: one monitor between them, so no MaxListenersExceededWarning.
				const stores = Array.from({ length: 12 }, () => redisStore({ client: bare }, { timeout: 1 }));
				await assert.rejects(stores[0]!.get(randomKey()), (error: unknown) => {
					assert.ok(error instanceof SessionStoreError);
					// ioredis handed the connection error to nobody (it printed it), so the store cannot name it.
					assert.ok(error.message.endsWith(`(Redis at 127.0.0.1:${port})`), error.message);
					return true;
				});
			} finally {
				console.error = original;
				bare.disconnect();
			}
			assert.equal(bare.listenerCount("error"), 0, "the store added no error listener");
			assert.ok(bare.listenerCount(errorMonitor) <= 1, `${bare.listenerCount(errorMonitor)} error monitors for 12 stores`);
			assert.ok(
				printed.some((line) => line.startsWith("[ioredis] Unhandled error event:") && line.includes("ECONNREFUSED")),
				`ioredis still printed the unhandled connection error: ${JSON.stringify(printed)}`,
			);
		});

		it("close() waits for a frozen server's answer to QUIT no longer than its timeout", async () => {
			const port = await freePort();
			const server = await startChildServer("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port);
			try {
				const store = redisStore({ url: `redis://127.0.0.1:${port}` }, { timeout: 1 });
				assert.equal(await store.get(randomKey()), null);
				await server.pause();
				const started = Date.now();
				await store.close!();
				assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				await assert.rejects(store.get(randomKey()), SessionStoreError, "its connection is closed");
			} finally {
				await server.stop();
			}
		});

		it("fails while its server is stopped or frozen, and recovers by itself when it is back", async () => {
			const port = await freePort();
			const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
			let server = await startChildServer("redis-server", args, port);
			const redis = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1 });
			redis.on("error", () => {});
			const store = redisStore({ client: redis }, { timeout: 1 });
			try {
				const key = randomKey();
				await store.set(key, makeRecord(), Date.now() + HOUR);
				assert.ok(await store.get(key));

				await server.pause();
				const frozen = Date.now();
				await assert.rejects(store.get(key), (error: unknown) => error instanceof SessionStoreError && /no answer within 1 s/.test(error.message));
				assert.ok(Date.now() - frozen < 1500, `took ${Date.now() - frozen} ms`);
				server.resume();
				assert.ok(await store.get(key), "answers again once the server runs");

				await server.stop();
				for (const operation of [() => store.get(key), () => store.merge!(key, noChanges(), Date.now() + HOUR), () => store.set(key, makeRecord(), Date.now() + HOUR)]) {
					const started = Date.now();
					await assert.rejects(operation(), (error: unknown) => error instanceof SessionStoreError && error.store === "redis");
					assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				}

				server = await startChildServer("redis-server", args, port);
				// A fresh server answers: null, not an error. (Not asked for `key`: a write that timed out
				// above may still land once ioredis reconnects, as the store's docs say.)
				assert.equal(await eventually(() => store.get(randomKey()), 10_000), null);
				await store.set(key, makeRecord(), Date.now() + HOUR);
				assert.ok(await store.get(key));
			} finally {
				redis.disconnect();
				await server.stop();
			}
		});
	});
});

describe("redis store on a fresh Cluster client", { skip: clusterSkip }, () => {
	const prefix = `sktest:${runId()}:`;
	let warm: Cluster;
	const keys = Array.from({ length: 6 }, () => randomKey());
	before(async () => {
		warm = clusterClient();
		const store = redisStore({ client: warm }, { prefix });
		for (const key of keys) await store.set(key, makeRecord(), Date.now() + HOUR);
	});
	after(async () => {
		const store = redisStore({ client: warm }, { prefix });
		await Promise.all(keys.map((key) => store.delete(key)));
		await warm.quit();
	});

	it("counts every master when count() is its first call, before the slot map has loaded", async () => {
		for (const options of [{}, { lazyConnect: true }]) {
			const fresh = clusterClient(options);
			try {
				assert.equal(await redisStore({ client: fresh }, { prefix }).count!(), keys.length, JSON.stringify(options));
			} finally {
				fresh.disconnect();
			}
		}
	});

	it("counts behind an ioredis keyPrefix", async () => {
		const keyPrefix = `${prefix}kp:`;
		const prefixed = clusterClient({ keyPrefix });
		const store = redisStore({ client: prefixed });
		const written = [randomKey(), randomKey(), randomKey()];
		try {
			for (const key of written) await store.set(key, makeRecord(), Date.now() + HOUR);
			assert.equal(await warm.exists(`${keyPrefix}sess:{${written[0]}}`), 1);
			assert.equal(await store.count!(), written.length);
		} finally {
			await Promise.all(written.map((key) => store.delete(key)));
			prefixed.disconnect();
		}
	});

	it("rejects with SessionStoreError when the client knows no masters, instead of counting 0", async () => {
		const ended = clusterClient();
		await new Promise((resolve) => ended.once("ready", resolve));
		await ended.quit();
		const started = Date.now();
		await assert.rejects(redisStore({ client: ended }, { prefix, timeout: 1 }).count!(), (error: unknown) => error instanceof SessionStoreError && /knows no masters/.test(error.message));
		assert.ok(Date.now() - started < 500, `took ${Date.now() - started} ms: a closed client is not waited for`);
	});

	it("waits for the slot map no longer than its timeout when no node answers", async () => {
		const nowhere = new Cluster([{ host: "127.0.0.1", port: await freePort() }], { redisOptions: { maxRetriesPerRequest: 1 } });
		nowhere.on("error", () => {});
		try {
			const started = Date.now();
			await assert.rejects(redisStore({ client: nowhere }, { timeout: 1 }).count!(), (error: unknown) => error instanceof SessionStoreError && /no answer within 1 s/.test(error.message));
			assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
			await sleep(100); // the wait's own timer, due right after the store's
			assert.equal(nowhere.listenerCount("ready") + nowhere.listenerCount("end"), 0, "the wait left no listener behind");
		} finally {
			nowhere.disconnect();
		}
	});
});

it("redisStore refuses an option it does not know, and one given in the connection, saying where it belongs", () => {
	const unknown = (error: unknown, option: string, message: string) => error instanceof SessionConfigError && error.option === option && error.message === `sessionkit: option "${option}" ${message}`;
	assert.throws(() => redisStore({ url: "redis://127.0.0.1:1" }, { prefx: "a:" } as never), (error) => unknown(error, "prefx", "is not an option of redisStore. Known: prefix, timeout."));
	assert.throws(() => redisStore({ url: "redis://127.0.0.1:1", prefix: "a:" } as never), (error) => unknown(error, "prefix", "belongs in redisStore's second argument, the options: redisStore(connection, { prefix }), not in the connection."));
	assert.throws(() => redisStore({ url: "redis://127.0.0.1:1", clinet: 1 } as never), (error) => unknown(error, "clinet", "is not an option of redisStore's connection (its first argument). Known: client, url."));
});
