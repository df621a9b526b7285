import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createCipheriv, createSecretKey, hkdfSync, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { createSessions, defaultCodec, isSealedCookieStore, SessionConfigError, SessionTooLargeError } from "sessionkit";
import type { SealedCookieStore, SessionEvent, StoredRecord } from "sessionkit";
import { cookieStore } from "sessionkit/stores/cookie";
import { makeRecord, sampleValues } from "sessionkit/testing";

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

function newSecret(): string {
	return randomBytes(32).toString("base64url");
}

/** The `name=value` pair a browser would send back. */
function cookiePair(setCookie: string | null): string {
	assert.ok(setCookie, "a Set-Cookie header was sent");
	return setCookie.split(";")[0]!;
}

function valueOf(pair: string): string {
	return pair.slice(pair.indexOf("=") + 1);
}

/** Starts a session holding `data` and returns its cookie pair. */
async function startSession(store: SealedCookieStore, data: Record<string, unknown> = { userId: 7 }): Promise<string> {
	const sessions = createSessions({ store });
	const session = await sessions.load(undefined);
	for (const [key, value] of Object.entries(data)) session.set(key, value);
	return cookiePair((await sessions.commit(session, { secure: true })).setCookie);
}

describe("cookie store", () => {
	it("is a sealed-cookie store", () => {
		const store = cookieStore({ secrets: newSecret() });
		assert.equal(isSealedCookieStore(store), true);
		assert.equal(store.kind, "sealed-cookie");
		assert.equal(store.maxCookieBytes, 4096);
	});

	it("round-trips a session through createSessions: data, flash, subject, then destroy", async () => {
		const sessions = createSessions({ store: cookieStore({ secrets: [newSecret()] }) });
		const first = await sessions.load(undefined);
		for (const [key, value] of Object.entries(sampleValues)) first.set(key, value);
		first.flash("notice", "Welcome ✓");
		first.subject = "user-ü-1";
		const pair = cookiePair((await sessions.commit(first, { secure: true })).setCookie);
		assert.match(valueOf(pair), /^v1\.[A-Za-z0-9_-]+$/);

		const second = await sessions.load(pair);
		assert.equal(second.isNew, false);
		for (const [key, value] of Object.entries(sampleValues)) assert.deepEqual(second.get(key), value, key);
		assert.equal(second.flash("notice"), "Welcome ✓");
		assert.equal(second.subject, "user-ü-1");
		second.set("step", 2);
		const pair2 = cookiePair((await sessions.commit(second, { secure: true })).setCookie);

		const third = await sessions.load(pair2);
		assert.equal(third.get("step"), 2);
		assert.equal(third.hasFlash("notice"), false, "a flash read once is gone");
		third.destroy();
		const { setCookie } = await sessions.commit(third, { secure: true });
		assert.match(setCookie ?? "", /Max-Age=0/i, "destroy expires the cookie");
	});

	it("keeps rememberMe in the sealed record: the cookie carries Max-Age on every write, until the session chooses otherwise", async () => {
		const sessions = createSessions({ store: cookieStore({ secrets: [newSecret()] }), idleTimeout: 900 });
		const first = await sessions.load(undefined);
		first.set("userId", 7);
		first.rememberMe = true;
		const remembered = (await sessions.commit(first, { secure: true })).setCookie!;
		assert.match(remembered, /Max-Age=900/);
		const second = await sessions.load(cookiePair(remembered));
		assert.equal(second.rememberMe, true);
		assert.deepEqual(second.all(), { userId: 7 });
		second.increment("visits");
		const again = (await sessions.commit(second, { secure: true })).setCookie!;
		assert.match(again, /Max-Age=900/);
		const third = await sessions.load(cookiePair(again));
		third.rememberMe = false;
		assert.doesNotMatch((await sessions.commit(third, { secure: true })).setCookie!, /Max-Age/);
	});

	it("round-trips the record exactly through seal and unseal", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const record = makeRecord({ subject: "alice", data: { "a.b": defaultCodec.encode(1), $x: defaultCodec.encode("ü🍪") } });
		assert.deepEqual(await store.unseal(await store.seal(record)), record);
		const empty = makeRecord({ data: {}, flash: {} });
		assert.deepEqual(await store.unseal(await store.seal(empty)), empty);
	});

	it("round-trips records of every length, in ASCII and beyond it", async () => {
		const store = cookieStore({ secrets: newSecret() });
		for (const unit of ["a", "é", "€", "🍪"]) {
			for (let repeat = 0; repeat < 7; repeat++) {
				const record = makeRecord({ data: { k: defaultCodec.encode(unit.repeat(repeat)) } });
				assert.deepEqual(await store.unseal(await store.seal(record)), record, `${repeat} × ${unit}`);
			}
		}
	});

	it("treats a cookie with any one character changed as no session", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const pair = await startSession(store);
		const events: SessionEvent[] = [];
		const sessions = createSessions({ store, onEvent: (event) => events.push(event) });
		const [name, value] = [pair.slice(0, pair.indexOf("=")), valueOf(pair)];
		for (let i = 0; i < value.length; i++) {
			const original = value[i]!;
			const replacement = B64URL[(B64URL.indexOf(original) + 1 + (i % 63)) % 64]!;
			assert.notEqual(replacement, original);
			const tampered = value.slice(0, i) + replacement + value.slice(i + 1);
			const session = await sessions.load(`${name}=${tampered}`);
			assert.equal(session.isNew, true, `character ${i} changed`);
			assert.equal(session.get("userId"), undefined);
		}
		assert.ok(events.every((event) => event.type === "cookie-rejected"), "each one is reported as a rejected cookie");
	});

	it("treats a truncated or extended cookie as no session", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const pair = await startSession(store);
		const sessions = createSessions({ store });
		const value = valueOf(pair);
		for (const length of [1, 3, 4, 10, 20, 40, value.length - 22, value.length - 2, value.length - 1]) {
			assert.equal((await sessions.load(`sid=${value.slice(0, length)}`)).isNew, true, `cut to ${length} characters`);
		}
		assert.equal((await sessions.load(`sid=${value}A`)).isNew, true, "one character added");
		assert.equal((await sessions.load(`sid=${value}AAAA`)).isNew, true, "three bytes added");
	});

	it("unseals malformed values and other versions to null without throwing", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const value = await store.seal(makeRecord());
		const hostile = ["", "v1.", "v1", "v2." + value.slice(3), value.slice(3), "V1." + value.slice(3), "v1.!!!!", "v1.====", `v1.${"A".repeat(200)}`, `v1.${"x".repeat(5000)}`, "v1.\u00e9\u00e9\u00e9\u00e9", value + ".", ` ${value}`];
		for (const input of hostile) assert.equal(await store.unseal(input), null, JSON.stringify(input.slice(0, 20)));
		assert.equal(await store.unseal(undefined as unknown as string), null);
		// The same bytes in another spelling (padding, the standard alphabet) must not open:
		// one record has one cookie value.
		const base64 = Buffer.from(value.slice(3), "base64url").toString("base64");
		const respelled = [`${value}=`, `${value}==`, `v1.${base64}`, `v1.${base64.replace(/=+$/, "")}`].filter((input) => input !== value);
		assert.ok(respelled.length >= 3, "the sealed value has characters the two alphabets spell differently");
		for (const input of respelled) assert.equal(await store.unseal(input), null, input.slice(-6));
	});

	it("refuses a sealed record of the wrong shape", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const bad: Array<Partial<Record<keyof StoredRecord, unknown>>> = [
			{ createdAt: "yesterday" },
			{ idleExpiresAt: null },
			{ absoluteExpiresAt: Number.POSITIVE_INFINITY },
			{ subject: 42 },
			{ data: { n: 1 } },
			{ data: ["x"] },
			{ flash: null },
		];
		for (const overrides of bad) {
			const value = await store.seal({ ...makeRecord(), ...overrides } as StoredRecord);
			assert.equal(await store.unseal(value), null, JSON.stringify(overrides));
		}
	});

	it("rotates secrets: old cookies open while the old secret is listed, new cookies use the first", async () => {
		const [oldSecret, newSecretValue] = [newSecret(), newSecret()];
		const before = cookieStore({ secrets: [oldSecret] });
		const oldPair = await startSession(before, { userId: 1 });

		const rotated = createSessions({ store: cookieStore({ secrets: [newSecretValue, oldSecret] }) });
		const session = await rotated.load(oldPair);
		assert.equal(session.isNew, false, "a cookie sealed with the old secret still opens");
		assert.equal(session.get("userId"), 1);
		session.set("userId", 2);
		const newPair = cookiePair((await rotated.commit(session, { secure: true })).setCookie);

		const newOnly = cookieStore({ secrets: newSecretValue });
		const oldOnly = cookieStore({ secrets: oldSecret });
		assert.equal((await newOnly.unseal(valueOf(newPair)))?.data.userId, "2", "the new seal uses the new secret");
		assert.equal(await oldOnly.unseal(valueOf(newPair)), null, "and not the old one");
	});

	it("treats a cookie sealed with a removed secret as no session", async () => {
		const [oldSecret, current] = [newSecret(), newSecret()];
		const oldPair = await startSession(cookieStore({ secrets: oldSecret }));
		const sessions = createSessions({ store: cookieStore({ secrets: [current] }) });
		const session = await sessions.load(oldPair);
		assert.equal(session.isNew, true);
		assert.equal(session.get("userId"), undefined);
	});

	it("refuses, with SessionTooLargeError, a cookie over maxCookieBytes (name included)", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const sessions = createSessions({ store });
		const session = await sessions.load(undefined);
		session.set("big", randomBytes(3000).toString("base64"));
		await assert.rejects(async () => sessions.commit(session, { secure: true }), (error: unknown) => {
			assert.ok(error instanceof SessionTooLargeError);
			assert.equal(error.limit, 4096);
			assert.ok(error.size > 4096);
			assert.match(error.message, /maxCookieBytes/);
			return true;
		});

		const small = cookieStore({ secrets: newSecret(), maxCookieBytes: 1024 });
		await assert.rejects(async () => small.seal(makeRecord({ data: { big: defaultCodec.encode("z".repeat(900)) } })), SessionTooLargeError);
	});

	it("keeps every cookie it produces within the browser budget, the name included", async () => {
		const store = cookieStore({ secrets: newSecret() });
		for (let size = 2000; size < 4000; size += 37) {
			let value: string;
			try {
				value = await store.seal(makeRecord({ data: { v: defaultCodec.encode("q".repeat(size)) } }));
			} catch (error) {
				assert.ok(error instanceof SessionTooLargeError);
				continue;
			}
			assert.ok(`sid=${value}`.length <= 4096 - 64 + 4, `${value.length} characters`);
		}
	});

	it("treats an expired record in a cookie that still decrypts as no session, reported as expired, not forged", async () => {
		let now = Date.UTC(2030, 0, 1);
		const clock = () => now;
		const store = cookieStore({ secrets: newSecret() });
		const events: SessionEvent[] = [];
		const sessions = createSessions({ store, clock, idleTimeout: 60, absoluteTimeout: 3600, onEvent: (event) => events.push(event) });
		const session = await sessions.load(undefined);
		session.set("userId", 9);
		const pair = cookiePair((await sessions.commit(session, { secure: true })).setCookie);

		now += 59_000;
		assert.equal((await sessions.load(pair)).get("userId"), 9, "still live just before the idle deadline");
		now += 2_000;
		assert.equal((await sessions.load(pair)).isNew, true);
		assert.deepEqual(events.at(-1), { type: "session-expired", id: null, reason: "idle" });

		now += 3_600_000;
		assert.equal((await sessions.load(pair)).isNew, true);
		assert.deepEqual(events.at(-1), { type: "session-expired", id: null, reason: "absolute" });
		assert.ok(!events.some((event) => event.type === "cookie-rejected"), "an expired cookie is not reported as a forged one");
	});

	it("seals the same record differently every time (random IV)", async () => {
		const store = cookieStore({ secrets: newSecret() });
		const record = makeRecord();
		const values = await Promise.all(Array.from({ length: 20 }, () => store.seal(record)));
		assert.equal(new Set(values).size, values.length);
		for (const value of values) assert.deepEqual(await store.unseal(value), record);
	});

	it("refuses a missing, empty or short secret and a bad maxCookieBytes at construction", () => {
		const cases: Array<[unknown, string]> = [
			[undefined, "secrets"],
			[{}, "secrets"],
			[{ secrets: [] }, "secrets"],
			[{ secrets: "too short" }, "secrets[0]"],
			[{ secrets: ["x".repeat(31)] }, "secrets[0]"],
			[{ secrets: [newSecret(), "short"] }, "secrets[1]"],
			[{ secrets: [newSecret(), 42] }, "secrets[1]"],
			[{ secrets: newSecret(), maxCookieBytes: 8192 }, "maxCookieBytes"],
			[{ secrets: newSecret(), maxCookieBytes: 100 }, "maxCookieBytes"],
			[{ secrets: newSecret(), maxCookieBytes: 1000.5 }, "maxCookieBytes"],
		];
		for (const [options, option] of cases) {
			assert.throws(() => cookieStore(options as never), (error: unknown) => {
				assert.ok(error instanceof SessionConfigError, JSON.stringify(options));
				assert.equal(error.option, option);
				return true;
			});
		}
		assert.doesNotThrow(() => cookieStore({ secrets: "x".repeat(32) }));
	});

	it("imports nothing from node: at runtime (it must run on Workers, Bun and Deno)", async () => {
		const source = await readFile(new URL("../../src/stores/cookie.ts", import.meta.url), "utf8");
		const runtimeImports = source.split("\n").filter((line) => /^import\s/.test(line) && !/^import\s+type\s/.test(line));
		assert.ok(runtimeImports.length > 0);
		for (const line of runtimeImports) assert.doesNotMatch(line, /["']node:/);
		assert.doesNotMatch(source, /import\(\s*["']node:/);
	});

	it("seals alike with Web Crypto (Workers) and node:crypto: each opens the other's cookies", async () => {
		const secret = newSecret();
		const record = makeRecord({ subject: "user-1" });
		// A child without process.getBuiltinModule and without Buffer takes the Web Crypto path and
		// the plain-JS base64url, as on Workers.
		const script = `
			delete process.getBuiltinModule;
			delete globalThis.Buffer;
			const { cookieStore } = await import("sessionkit/stores/cookie");
			const store = cookieStore({ secrets: ${JSON.stringify(secret)} });
			const record = JSON.parse(process.argv[1]);
			const opened = await store.unseal(process.argv[2]);
			console.log(JSON.stringify({ sealed: await store.seal(record), opened }));
		`;
		const store = cookieStore({ secrets: secret });
		const sealedHere = await store.seal(record);
		const { stdout } = await promisify(execFile)(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", "--input-type=module", "-e", script, JSON.stringify(record), sealedHere]);
		const { sealed, opened } = JSON.parse(stdout) as { sealed: string; opened: unknown };
		assert.deepEqual(opened, record, "Web Crypto opens a cookie node:crypto sealed");
		assert.deepEqual(await store.unseal(sealed), record, "node:crypto opens a cookie Web Crypto sealed");
	});

	it("opens the same values with Web Crypto and node:crypto: a plaintext no seal writes (a BOM, bytes that are not UTF-8) opens on neither", async () => {
		const secret = newSecret();
		// Sealed by hand as the store seals, with the secret: only the plaintext bytes differ.
		const key = createSecretKey(new Uint8Array(hkdfSync("sha256", secret, new Uint8Array(0), Buffer.from("sessionkit cookie v1"), 32)));
		const sealBytes = (plaintext: Buffer) => {
			const iv = randomBytes(12);
			const cipher = createCipheriv("aes-256-gcm", key, iv);
			cipher.setAAD(Buffer.from("sessionkit session cookie v1"));
			return `v1.${Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]).toString("base64url")}`;
		};
		const json = JSON.stringify([1, 2e12, 2e12, null, { a: defaultCodec.encode("x") }, {}]);
		const values = {
			plain: sealBytes(Buffer.from(json)),
			bom: sealBytes(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json)])),
			notUtf8: sealBytes(Buffer.concat([Buffer.from(json.slice(0, -8)), Buffer.from([0xff]), Buffer.from(json.slice(-8))])),
			loneSurrogate: sealBytes(Buffer.concat([Buffer.from(json.slice(0, -8)), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(json.slice(-8))])),
		};
		const script = `
			delete process.getBuiltinModule;
			delete globalThis.Buffer;
			const { cookieStore } = await import("sessionkit/stores/cookie");
			const store = cookieStore({ secrets: ${JSON.stringify(secret)} });
			const opened = {};
			for (const [name, value] of Object.entries(JSON.parse(process.argv[1]))) opened[name] = (await store.unseal(value)) !== null;
			console.log(JSON.stringify(opened));
		`;
		const { stdout } = await promisify(execFile)(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", "--input-type=module", "-e", script, JSON.stringify(values)]);
		const store = cookieStore({ secrets: secret });
		const here: Record<string, boolean> = {};
		for (const [name, value] of Object.entries(values)) here[name] = (await store.unseal(value)) !== null;
		const expected = { plain: true, bom: false, notUtf8: false, loneSurrogate: false };
		assert.deepEqual(here, expected, "node:crypto");
		assert.deepEqual(JSON.parse(stdout), expected, "Web Crypto");
	});
});

it("cookieStore refuses an option it does not know (a typo would do nothing)", () => {
	assert.throws(
		() => cookieStore({ secrets: "x".repeat(32), maxCookieByte: 1024 } as never),
		(error) => error instanceof SessionConfigError && error.option === "maxCookieByte" && error.message === 'sessionkit: option "maxCookieByte" is not an option of cookieStore. Known: secrets, maxCookieBytes.',
	);
});
