import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import memjs from "memjs";
import { SessionConfigError, SessionStoreError, defaultCodec } from "sessionkit";
import type { AsyncSessionStore, SessionStore, StoredRecord } from "sessionkit";
import { memcachedStore } from "sessionkit/stores/memcached";
import { eventually, freePort, hasCommand, startChildServer } from "../helpers/child-server.js";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";
import { requireService, serviceURL } from "../services.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const silent = { log() {} };
const skip = await requireService("memcached");
const servers = serviceURL.memcached.split(",").map((s) => s.trim());

function client(hosts = serviceURL.memcached): memjs.Client {
	return memjs.Client.create(hosts, { retries: 1, timeout: 1, logger: silent });
}

/**
 * memcached cannot list keys, so the test remembers what it wrote and deletes that afterwards.
 * Not a mock: every call still goes to the real store.
 */
function tracked(store: SessionStore): { store: SessionStore; written: Set<string> } {
	const written = new Set<string>();
	return { written, store: { ...store, set: (key, record, expiresAt) => (written.add(key), store.set(key, record, expiresAt)) } };
}

// memcached keeps its own clock, ticked by a once-a-second timer that lags on a busy machine:
// its TTL of an absolute expiry was seen 3 s off.
const TTL_SLACK_S = 5;

/**
 * Seconds memcached's clock runs behind this machine's (`stats` time). It counts from its start
 * on a monotonic clock, so it drifts from a wall clock the VM adjusts: 7 s after a few hours here.
 * An absolute expiry's TTL, as memcached reports it, is off by as much.
 */
async function serverClockLag(hostPort: string): Promise<number> {
	const [host, port] = hostPort.split(":");
	const stats = await new Promise<string>((resolve, reject) => {
		const socket = connect({ host: host!, port: Number(port) }, () => socket.write("stats\r\n"));
		let text = "";
		socket.on("data", (chunk) => {
			text += chunk.toString();
			if (text.endsWith("END\r\n")) (socket.end(), resolve(text));
		});
		socket.on("error", reject);
	});
	const time = /STAT time (\d+)/.exec(stats);
	if (!time) throw new Error(`no time in memcached's stats: ${stats.slice(0, 200)}`);
	return Date.now() / 1000 - Number(time[1]);
}

/** The remaining TTL memcached itself reports for `key` (meta get), from whichever server holds it. */
/** The TTL memcached reports for `key`; an absolute expiry's on this machine's clock (see serverClockLag). */
async function serverTTL(key: string): Promise<number | null> {
	for (const hostPort of servers) {
		const [host, port] = hostPort.split(":");
		const reply = await new Promise<string>((resolve, reject) => {
			const socket = connect({ host: host!, port: Number(port) }, () => socket.write(`mg ${key} t\r\n`));
			let text = "";
			socket.on("data", (chunk) => {
				text += chunk.toString();
				if (text.endsWith("\r\n")) (socket.end(), resolve(text.trim()));
			});
			socket.on("error", reject);
		});
		const ttl = /^HD t(-?\d+)/.exec(reply);
		if (!ttl) continue;
		// Past 30 days the store sends an absolute time, which memcached counts on its own clock.
		const seconds = Number(ttl[1]);
		return seconds > 30 * 86_400 ? seconds - (await serverClockLag(hostPort)) : seconds;
	}
	return null;
}

/**
 * A TCP proxy to one memcached that holds its answers (and its end of the connection) back
 * `delay` ms, like a slow network, and counts the connections made through it. With
 * `resetOnOpcode` set, it drops the answer to the next request of that opcode and resets the
 * connection: memcached applied the request, the client sees a connection error. Not a mock:
 * every request reaches the real server. close() ends every connection it carries.
 */
async function slowProxy(target: string): Promise<{ port: number; delay: number; connections: number; resetOnOpcode: number | null; close(): Promise<void> }> {
	const [host, port] = target.split(":");
	const sockets = new Set<Socket>();
	const server = createServer({ allowHalfOpen: true }, (downstream) => {
		proxy.connections++;
		const upstream = connect({ host: host!, port: Number(port), allowHalfOpen: true });
		const later = (act: () => void) => (proxy.delay > 0 ? setTimeout(act, proxy.delay) : act());
		for (const socket of [downstream, upstream]) (sockets.add(socket), socket.on("error", () => {}));
		downstream.on("data", (chunk) => upstream.write(chunk));
		downstream.on("end", () => upstream.end());
		downstream.on("close", () => upstream.destroy());
		upstream.on("data", (chunk) => {
			if (proxy.resetOnOpcode !== null && chunk[1] === proxy.resetOnOpcode) return ((proxy.resetOnOpcode = null), downstream.resetAndDestroy());
			later(() => downstream.destroyed || downstream.write(chunk));
		});
		upstream.on("end", () => later(() => downstream.end()));
		upstream.on("close", () => later(() => downstream.destroy()));
	});
	const proxy = {
		port: 0,
		delay: 0,
		connections: 0,
		resetOnOpcode: null as number | null,
		close: () => new Promise<void>((resolve) => (sockets.forEach((socket) => socket.destroy()), server.close(() => resolve()))),
	};
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	proxy.port = (server.address() as { port: number }).port;
	return proxy;
}

storeConformance(
	"memcached",
	async () => {
		const memcached = client();
		const { store, written } = tracked(memcachedStore({ client: memcached }, { prefix: `sktest:${runId()}:` }));
		return {
			store,
			async cleanup() {
				await Promise.all([...written].map((key) => store.delete(key)));
				memcached.close();
			},
		};
	},
	{ merge: true, subjects: false, count: false, selfExpiring: true, expiryResolutionMs: 1000 },
	{ skip },
);

describe("memcached store", () => {
	it("refuses a bad prefix, timeout or connection at construction", () => {
		const unconnected = memjs.Client.create("127.0.0.1:1", { logger: silent }); // memjs connects at the first request
		for (const prefix of ["", "a b", "tab\t", "é:", "x".repeat(187)]) {
			assert.throws(() => memcachedStore({ client: unconnected }, { prefix }), SessionConfigError, JSON.stringify(prefix));
		}
		assert.throws(() => memcachedStore({ client: unconnected }, { timeout: 0 }), SessionConfigError);
		assert.throws(() => memcachedStore({ client: {} as memjs.Client }), SessionConfigError);
		assert.throws(() => memcachedStore({ client: { replace() {} } as unknown as memjs.Client }), SessionConfigError, "a client without memjs's perform");
		assert.throws(() => memcachedStore({ servers: " " }), SessionConfigError);
	});

	it("refuses a servers entry that is not host:port, naming it (and not its password)", () => {
		const bad: Array<[string | string[], string]> = [
			["127.0.0.1:11211,127.0.0.1:notaport", `"127.0.0.1:notaport"`],
			[["127.0.0.1:11211", "127.0.0.1:70000"], `"127.0.0.1:70000"`],
			["127.0.0.1:11211, cache host:11211", `"cache host:11211"`],
			["user:hunter2@127.0.0.1:0", `"…@127.0.0.1:0"`],
			["127.0.0.1:11211,,127.0.0.1:11212", "empty entry"],
			["127.0.0.1:11211,", "empty entry"],
		];
		for (const [servers, named] of bad) {
			assert.throws(() => memcachedStore({ servers }), (error: unknown) => {
				assert.ok(error instanceof SessionConfigError);
				assert.equal(error.option, "servers");
				assert.ok(error.message.includes(named), error.message);
				assert.ok(!error.message.includes("hunter2"), error.message);
				return true;
			});
		}
	});

	it("names a bad option's value the way the other stores do, and refuses no connection at all", () => {
		const unconnected = memjs.Client.create("127.0.0.1:1", { logger: silent }); // memjs connects at the first request
		const cases: Array<[() => unknown, string, RegExp]> = [
			[() => memcachedStore({ client: unconnected }, { timeout: "5" as never }), "timeout", /, got "5"\.$/],
			[() => memcachedStore({ client: unconnected }, { prefix: 5n as never }), "prefix", /, got bigint\.$/],
			// setTimeout would clamp it to 1 ms, and every operation would time out at once.
			[() => memcachedStore({ client: unconnected }, { timeout: 3_000_000 }), "timeout", /at most 2147483, got 3000000\.$/],
			[() => memcachedStore(undefined as never), "connection", /must be \{ client \}/],
			[() => memcachedStore(null as never), "connection", /must be \{ client \}/],
		];
		for (const [make, option, message] of cases) {
			assert.throws(make, (error: unknown) => error instanceof SessionConfigError && error.option === option && message.test(error.message), String(message));
		}
	});

	it("refuses a client with memjs's failover on, which brings back sessions deleted while their server did not answer", () => {
		const failover = memjs.Client.create("127.0.0.1:1,127.0.0.1:2", { failover: true, logger: silent });
		assert.throws(() => memcachedStore({ client: failover }), (error: unknown) => error instanceof SessionConfigError && error.option === "client" && /failover/.test(error.message));
		memcachedStore({ client: memjs.Client.create("127.0.0.1:1", { logger: silent }) });
	});

	it("has no subject index or count (memcached cannot list keys)", () => {
		const store = memcachedStore({ client: memjs.Client.create("127.0.0.1:1", { logger: silent }) });
		assert.equal(store.listBySubject, undefined);
		assert.equal(store.deleteBySubject, undefined);
		assert.equal(store.count, undefined);
	});

	describe("against two servers", { skip }, () => {
		let memcached: memjs.Client;
		let store: SessionStore;
		let written: Set<string>;
		const prefix = `sktest:${runId()}:`;
		before(() => {
			memcached = client();
			({ store, written } = tracked(memcachedStore({ client: memcached }, { prefix })));
		});
		after(async () => {
			await Promise.all([...written].map((key) => store.delete(key)));
			memcached.close();
		});

		it("spreads keys over both servers", async () => {
			const keys = Array.from({ length: 40 }, () => randomKey());
			for (const key of keys) await store.set(key, makeRecord(), Date.now() + HOUR);
			const counts = await Promise.all(
				servers.map(async (server) => {
					const single = client(server);
					try {
						const found = await Promise.all(keys.map(async (key) => (await single.get(prefix + key)).value !== null));
						return found.filter(Boolean).length;
					} finally {
						single.close();
					}
				}),
			);
			assert.ok(counts.every((n) => n > 0), `keys per server: ${counts.join(", ")}`);
			assert.equal(counts.reduce((a, b) => a + b, 0), keys.length, "each key lives on exactly one server");
		});

		it("stores an expiry past 30 days as an absolute time, so the record lives that long", async () => {
			for (const days of [29, 30, 31, 40, 365]) {
				const key = randomKey();
				await store.set(key, makeRecord({ absoluteExpiresAt: Date.now() + days * DAY }), Date.now() + days * DAY);
				assert.ok(await store.get(key), `a ${days}-day record is readable`);
				const ttl = await serverTTL(prefix + key);
				assert.ok(ttl !== null && Math.abs(ttl - days * 86_400) <= TTL_SLACK_S, `memcached reports ${ttl} s left for ${days} days`);
			}
		});

		it("touch moves memcached's own expiry, past 30 days too", async () => {
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + HOUR);
			const later = Date.now() + 45 * DAY;
			await store.touch(key, later, later);
			assert.equal((await store.get(key))?.idleExpiresAt, later);
			const ttl = await serverTTL(prefix + key);
			assert.ok(ttl !== null && Math.abs(ttl - 45 * 86_400) <= TTL_SLACK_S, `memcached reports ${ttl} s left`);
		});

		it("touches racing parallel merges keep every increment and the latest deadline (compare-and-swap)", async () => {
			const key = randomKey();
			written.add(key);
			const idle = Date.now() + HOUR;
			await store.set(key, makeRecord({ data: {}, idleExpiresAt: idle }), idle);
			// Each touch reads the record and writes it back; a merge landing in between must not be overwritten.
			const touched = idle + 60_000;
			await Promise.all(
				Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? store.merge!(key, noChanges({ increment: { hits: 1 }, idleExpiresAt: idle }), idle) : store.touch(key, touched, touched))),
			);
			const loaded = await store.get(key);
			assert.equal(loaded?.data.hits, "15");
			assert.ok(loaded.idleExpiresAt === idle || loaded.idleExpiresAt === touched);
		});

		it("merge and touch of a session deleted meanwhile write nothing", async () => {
			const key = randomKey();
			await store.set(key, makeRecord({ data: { a: "1" } }), Date.now() + HOUR);
			const merging = Array.from({ length: 10 }, () => store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR));
			const touching = Array.from({ length: 10 }, () => store.touch(key, Date.now() + 2 * HOUR, Date.now() + 2 * HOUR));
			await store.delete(key);
			await Promise.all([...merging, ...touching]);
			assert.equal(await store.get(key), null);
			assert.equal((await memcached.get(prefix + key)).value, null, "no item is left in memcached either");
		});

		it("merge and touch that timed out send nothing more: an answer coming late does not apply a change the caller was told failed", async () => {
			const proxy = await slowProxy(servers[0]!);
			// memjs waits longer than the store, so the store's timeout is what the caller sees.
			const slow = memjs.Client.create(`127.0.0.1:${proxy.port}`, { retries: 1, timeout: 10, logger: silent });
			const direct = client(servers[0]);
			const slowStore = memcachedStore({ client: slow }, { prefix, timeout: 1 });
			const [merged, touched] = [randomKey(), randomKey()];
			const idle = Date.now() + HOUR;
			try {
				for (const key of [merged, touched]) await slowStore.set(key, makeRecord({ data: { n: "0" }, idleExpiresAt: idle }), idle);
				proxy.delay = 1500;
				await Promise.all([
					assert.rejects(slowStore.merge!(merged, noChanges({ set: { n: "1" }, idleExpiresAt: idle }), idle), (error: unknown) => error instanceof SessionStoreError && /merge got no answer within 1 s/.test(error.message)),
					assert.rejects(slowStore.touch(touched, idle + HOUR, idle + HOUR), (error: unknown) => error instanceof SessionStoreError && /touch got no answer within 1 s/.test(error.message)),
				]);
				// By now the reads' answers have come, and anything sent after them has reached memcached.
				await sleep(1500);
				for (const key of [merged, touched]) {
					const { data, idleExpiresAt } = JSON.parse(String((await direct.get(prefix + key)).value)) as StoredRecord;
					assert.deepEqual({ data, idleExpiresAt }, { data: { n: "0" }, idleExpiresAt: idle }, key === merged ? "merge" : "touch");
				}
			} finally {
				await Promise.all([merged, touched].map((key) => direct.delete(prefix + key)));
				slow.close();
				direct.close();
				await proxy.close();
			}
		});

		it("close() during a merge or touch stops it: nothing is sent after it, and no connection is reopened", async () => {
			const proxy = await slowProxy(servers[0]!);
			const direct = client(servers[0]);
			const keys: string[] = [];
			try {
				const cases: Array<[string, (store: AsyncSessionStore, key: string) => Promise<unknown>]> = [
					["merge", (store, key) => store.merge!(key, noChanges({ set: { n: "1" } }), Date.now() + HOUR)],
					// A deadline already past: the store would delete the item after reading it.
					["merge with a deadline passed", (store, key) => store.merge!(key, noChanges({ set: { n: "1" } }), Date.now() - 1)],
					["touch", (store, key) => store.touch(key, Date.now() + 2 * HOUR, Date.now() + 2 * HOUR)],
				];
				for (const [name, operation] of cases) {
					const owned = memcachedStore({ servers: `127.0.0.1:${proxy.port}` }, { prefix, timeout: 2 });
					const key = randomKey();
					keys.push(key);
					await owned.set(key, makeRecord({ data: { n: "0" } }), Date.now() + HOUR);
					const connections = proxy.connections;
					proxy.delay = 100;
					const running = operation(owned, key);
					await sleep(20); // its read is on the way
					await owned.close!();
					await assert.rejects(running, SessionStoreError, name);
					await sleep(500); // past memjs's retry_delay
					proxy.delay = 0;
					assert.equal(proxy.connections, connections, `${name}: no connection opened after close()`);
					assert.deepEqual((JSON.parse(String((await direct.get(prefix + key)).value)) as StoredRecord).data, { n: "0" }, `${name}: the record is as it was`);
				}
			} finally {
				await Promise.all(keys.map((key) => direct.delete(prefix + key)));
				direct.close();
				await proxy.close();
			}
		});

		it("a merge that keeps losing to parallel writes gives up within its timeout, saying so", async () => {
			const proxy = await slowProxy(servers[0]!);
			const direct = client(servers[0]);
			const owned = memcachedStore({ servers: `127.0.0.1:${proxy.port}` }, { prefix, timeout: 1 });
			const key = randomKey();
			let writing = true;
			try {
				await owned.set(key, makeRecord(), Date.now() + HOUR);
				const other = JSON.stringify({ ...makeRecord({ data: { other: "1" } }), expiresAt: Date.now() + HOUR });
				// Each read's answer comes 20 ms late, and parallel writes land in every gap.
				proxy.delay = 20;
				const writers = Array.from({ length: 8 }, async () => {
					while (writing) await direct.set(prefix + key, other, { expires: 3600 });
				});
				const started = Date.now();
				await assert.rejects(owned.merge!(key, noChanges({ set: { n: "1" } }), Date.now() + HOUR), (error: unknown) => {
					assert.ok(error instanceof SessionStoreError);
					assert.equal(error.message, "sessionkit/memcached: merge gave up: the session kept changing under it for 1 s.");
					return true;
				});
				assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				writing = false;
				await Promise.all(writers);
			} finally {
				writing = false;
				await direct.delete(prefix + key);
				await owned.close!();
				direct.close();
				await proxy.close();
			}
		});

		it("merge sends its compare-and-swap write once: after a connection error it is not applied a second time", async () => {
			const proxy = await slowProxy(servers[0]!);
			// memjs sends a request again after a connection error, up to `retries` times.
			const retrying = memjs.Client.create(`127.0.0.1:${proxy.port}`, { retries: 3, retry_delay: 0, timeout: 1, logger: silent });
			const direct = client(servers[0]);
			const retryingStore = memcachedStore({ client: retrying }, { prefix, timeout: 2 });
			const key = randomKey();
			try {
				await retryingStore.set(key, makeRecord({ data: { n: "0" } }), Date.now() + HOUR);
				proxy.resetOnOpcode = 0x03; // the compare-and-swap replace
				await assert.rejects(retryingStore.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), SessionStoreError);
				assert.deepEqual((JSON.parse(String((await direct.get(prefix + key)).value)) as StoredRecord).data, { n: "1" }, "the increment memcached applied, once");
			} finally {
				await direct.delete(prefix + key);
				retrying.close();
				direct.close();
				await proxy.close();
			}
		});

		it("merge and touch of a record past its deadline, which memcached still holds, write nothing", async () => {
			const key = randomKey();
			written.add(key);
			const expiresAt = Date.now() + 300;
			await store.set(key, makeRecord({ data: { a: "1" }, idleExpiresAt: expiresAt }), expiresAt);
			await sleep(400);
			const held = (await memcached.get(prefix + key)).value;
			assert.ok(held, "memcached drops it a second or two after its deadline");
			assert.equal(await store.merge!(key, noChanges({ set: { a: "2" } }), Date.now() + HOUR), false);
			await store.touch(key, Date.now() + HOUR, Date.now() + HOUR);
			assert.deepEqual((await memcached.get(prefix + key)).value, held, "the item is as it was");
			assert.equal(await store.get(key), null);
		});

		it("names memcached's 1 MB value limit when a record is over it", async () => {
			const big = defaultCodec.encode("z".repeat(1_100_000));
			await assert.rejects(async () => store.set(randomKey(), makeRecord({ data: { big } }), Date.now() + HOUR), (error: unknown) => {
				assert.ok(error instanceof SessionStoreError);
				assert.match(error.message, /1 MB/);
				return true;
			});
			const key = randomKey();
			await store.set(key, makeRecord({ data: { small: "1" } }), Date.now() + HOUR);
			await assert.rejects(async () => store.merge!(key, noChanges({ set: { big } }), Date.now() + HOUR), (error: unknown) => {
				assert.ok(error instanceof SessionStoreError);
				assert.match(error.message, /^sessionkit\/memcached: merge failed: .*too large.*1 MB/);
				return true;
			});
			assert.deepEqual((await store.get(key))?.data, { small: "1" }, "the record is as it was");
		});

		it("with { servers } takes spaces around the commas, and places each key where the list without them does", async () => {
			for (const list of [servers.join(", "), ` ${servers.join(" ,\t")} `, servers.map((server) => ` ${server} `)]) {
				const owned = memcachedStore({ servers: list }, { prefix, timeout: 2 });
				try {
					const keys = Array.from({ length: 20 }, () => randomKey());
					for (const key of keys) {
						written.add(key);
						await owned.set(key, makeRecord(), Date.now() + HOUR);
					}
					// Read through the test's own client: the same servers, so the same key placement.
					const found = await Promise.all(keys.map((key) => store.get(key)));
					assert.ok(found.every(Boolean), JSON.stringify(list));
				} finally {
					await owned.close!();
				}
			}
		});

		it("never drops a record before its deadline, though memcached's clock ticks once a second and lags", async () => {
			// Deadlines spread over a second, so some fall just after one of memcached's ticks.
			const early: number[] = [];
			await Promise.all(
				Array.from({ length: 12 }, async (_, i) => {
					await sleep(i * 83);
					const key = randomKey();
					written.add(key);
					const expiresAt = Date.now() + 1500 + ((i * 97) % 1000);
					await store.set(key, makeRecord(), expiresAt);
					while ((await memcached.get(prefix + key)).value !== null) await sleep(10);
					if (Date.now() < expiresAt) early.push(expiresAt - Date.now());
				}),
			);
			assert.deepEqual(early, [], "ms before their deadline that memcached dropped records");
		});

		it("keeps working past memjs's 2^31st request on one client", async () => {
			const key = randomKey();
			written.add(key);
			await store.set(key, makeRecord(), Date.now() + HOUR);
			// memjs's request number as it is after about 2^31 requests (five days at 5,000 a second).
			(memcached as { seq: number }).seq = 0x7fffffff - 1;
			for (let i = 0; i < 4; i++) assert.ok(await store.get(key), `request ${i} past the wrap`);
			assert.ok(memcached.seq > 0 && memcached.seq < 100, `seq ${memcached.seq}`);
		});

		it("after close() rejects every operation and never reconnects, and a second close() is a no-op", async () => {
			const sockets = () => process.getActiveResourcesInfo().filter((name) => name === "TCPSocketWrap").length;
			const before = sockets();
			const owned = memcachedStore({ servers }, { prefix });
			const key = randomKey();
			written.add(key);
			await owned.set(key, makeRecord(), Date.now() + HOUR);
			await owned.close!();
			try {
				await owned.close!();
				for (const operation of [() => owned.get(key), () => owned.set(key, makeRecord(), Date.now() + HOUR), () => owned.replace(key, makeRecord(), Date.now() + HOUR), () => owned.touch(key, Date.now() + HOUR, Date.now() + HOUR), () => owned.merge!(key, noChanges({ set: { a: "1" } }), Date.now() + HOUR), () => owned.delete(key)]) {
					await assert.rejects(operation(), (error: unknown) => error instanceof SessionStoreError && /called after close\(\)/.test(error.message));
				}
				const gone = await eventually(async () => {
					if (sockets() > before) throw new Error(`${sockets() - before} socket(s) still open`);
					return true;
				}, 2000);
				assert.ok(gone, "no connection is left to keep the process alive");
				assert.ok(await store.get(key), "the record is still there for other clients");
			} finally {
				// Should this test fail, a connection reopened after close() must not hang the run.
				await owned.close!();
			}
		});

		it("with { servers } connects by itself, and close() closes only that connection", async () => {
			const owned = memcachedStore({ servers }, { prefix });
			const key = randomKey();
			written.add(key);
			await owned.set(key, makeRecord(), Date.now() + HOUR);
			assert.ok(await owned.get(key));
			await owned.close!();
			const borrowed = memcachedStore({ client: memcached }, { prefix });
			await borrowed.close!();
			assert.ok((await memcached.get(prefix + key)).value, "a client passed in stays open");
			await assert.rejects(borrowed.get(key), SessionStoreError, "the store itself is closed");
		});
	});

	const noServer = skip ?? (hasCommand("memcached") ? undefined : "memcached is not installed");
	describe("when memcached is down", { skip: noServer }, () => {
		it("rejects with SessionStoreError naming the store within its timeout (nothing ever listened)", async () => {
			const store = memcachedStore({ servers: `127.0.0.1:${await freePort()}` }, { timeout: 1 });
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), (error: unknown) => {
				assert.ok(error instanceof SessionStoreError);
				assert.equal(error.store, "memcached");
				assert.match(error.message, /^sessionkit\/memcached: get /);
				return true;
			});
			assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
			await store.close!();
		});

		it("fails while its server is stopped or frozen, and recovers by itself when it is back", async () => {
			const port = await freePort();
			const args = ["-p", String(port), "-l", "127.0.0.1", "-U", "0", ...(process.getuid?.() === 0 ? ["-u", "root"] : [])];
			let server = await startChildServer("memcached", args, port);
			const memcached = client(`127.0.0.1:${port}`);
			const store = memcachedStore({ client: memcached }, { timeout: 1 });
			try {
				const key = randomKey();
				await store.set(key, makeRecord(), Date.now() + HOUR);
				assert.ok(await store.get(key));

				await server.pause();
				const frozen = Date.now();
				await assert.rejects(store.get(key), (error: unknown) => error instanceof SessionStoreError && error.store === "memcached");
				assert.ok(Date.now() - frozen < 1500, `took ${Date.now() - frozen} ms`);
				server.resume();
				assert.ok(await eventually(() => store.get(key), 5000), "answers again once the server runs");

				await server.stop();
				for (const operation of [() => store.get(key), () => store.replace(key, makeRecord(), Date.now() + HOUR), () => store.set(key, makeRecord(), Date.now() + HOUR), () => store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), () => store.touch(key, Date.now() + HOUR, Date.now() + HOUR)]) {
					const started = Date.now();
					await assert.rejects(operation(), (error: unknown) => error instanceof SessionStoreError && error.store === "memcached");
					assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				}

				server = await startChildServer("memcached", args, port);
				assert.equal(await eventually(() => store.get(key), 10_000), null, "a restarted memcached is empty, and answers");
				await store.set(key, makeRecord(), Date.now() + HOUR);
				assert.ok(await store.get(key));
			} finally {
				memcached.close();
				await server.stop();
			}
		});
	});
});

it("memcachedStore refuses an option it does not know, and one given in the connection, saying where it belongs", () => {
	const unknown = (error: unknown, option: string, message: string) => error instanceof SessionConfigError && error.option === option && error.message === `sessionkit: option "${option}" ${message}`;
	assert.throws(() => memcachedStore({ servers: "127.0.0.1:1" }, { timout: 5 } as never), (error) => unknown(error, "timout", "is not an option of memcachedStore. Known: prefix, timeout."));
	assert.throws(() => memcachedStore({ servers: "127.0.0.1:1", timeout: 5 } as never), (error) => unknown(error, "timeout", "belongs in memcachedStore's second argument, the options: memcachedStore(connection, { timeout }), not in the connection."));
	assert.throws(() => memcachedStore({ servers: "127.0.0.1:1", server: 1 } as never), (error) => unknown(error, "server", "is not an option of memcachedStore's connection (its first argument). Known: client, servers."));
});
