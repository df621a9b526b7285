import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createSessions, SessionConfigError } from "sessionkit";
import type { SessionOptions } from "sessionkit";
import { cookieStore } from "sessionkit/stores/cookie";
import { memoryStore } from "sessionkit/stores/memory";
import { cookieOf, request } from "../helpers/round.js";

function refuses(options: unknown, option: string, message?: RegExp): void {
	assert.throws(
		() => createSessions(options as SessionOptions),
		(error: unknown) => {
			assert.ok(error instanceof SessionConfigError, `expected SessionConfigError, got ${String(error)}`);
			assert.equal(error.option, option);
			assert.equal(error.code, "SESSION_CONFIG");
			assert.match(error.message, new RegExp(`"${option.replace(".", "\\.")}"`));
			if (message) assert.match(error.message, message);
			return true;
		},
	);
}

describe("createSessions options", () => {
	it("has safe defaults", () => {
		const { options } = createSessions();
		assert.equal(options.idleTimeoutMs, 1_800_000);
		assert.equal(options.absoluteTimeoutMs, 86_400_000);
		assert.equal(options.touchAfterMs, 180_000);
		assert.deepEqual(options.cookie, { name: "sid", path: "/", domain: undefined, sameSite: "lax", secure: "auto", httpOnly: true, persist: false, partitioned: false });
	});

	it("refuses bad durations, naming the option", () => {
		refuses({ idleTimeout: -1 }, "idleTimeout", /positive/);
		refuses({ idleTimeout: 0 }, "idleTimeout");
		refuses({ idleTimeout: Number.NaN }, "idleTimeout");
		refuses({ idleTimeout: "30" }, "idleTimeout");
		refuses({ absoluteTimeout: Infinity }, "absoluteTimeout");
		refuses({ idleTimeout: 3600, absoluteTimeout: 60 }, "absoluteTimeout", /shorter than idleTimeout/);
		refuses({ touchAfter: -5 }, "touchAfter");
		refuses({ idleTimeout: 60, touchAfter: 60 }, "touchAfter");
		// Deadlines past what stores hold: every write would fail at run time (PostgreSQL's bigint, Redis's expiry).
		refuses({ idleTimeout: 1e17 }, "idleTimeout", /at most 3155760000 seconds \(100 years\)/);
		refuses({ absoluteTimeout: 1e12 }, "absoluteTimeout", /100 years/);
		assert.equal(createSessions({ idleTimeout: 3_155_760_000 }).options.absoluteTimeoutMs, 3_155_760_000_000, "100 years is the limit");
		refuses({ maxSize: 10 }, "maxSize");
		refuses({ maxSize: 1.5 }, "maxSize");
	});

	it("refuses unknown options instead of ignoring a typo", () => {
		refuses({ idleTimout: 60 }, "idleTimout", /not an option/);
		refuses({ cookie: { sameSight: "lax" } }, "cookie.sameSight");
	});

	it("refuses cookie settings that are unsafe or could inject attributes", () => {
		refuses({ cookie: { sameSite: "sometimes" } }, "cookie.sameSite");
		refuses({ cookie: { sameSite: "none" } }, "cookie.sameSite", /Secure/);
		refuses({ cookie: { sameSite: "none", secure: "auto" } }, "cookie.sameSite");
		refuses({ cookie: { name: "sid; Domain=evil.com" } }, "cookie.name");
		refuses({ cookie: { name: "s id" } }, "cookie.name");
		refuses({ cookie: { name: "" } }, "cookie.name");
		refuses({ cookie: { name: "__Host-sid" } }, "cookie.name", /__Host-/);
		refuses({ cookie: { name: "__Host-sid", secure: true, domain: "example.com" } }, "cookie.name");
		refuses({ cookie: { name: "__Host-sid", secure: true, path: "/app" } }, "cookie.name");
		refuses({ cookie: { name: "__Secure-sid" } }, "cookie.name");
		// Browsers match the prefixes in any case, and would drop these over HTTP.
		refuses({ cookie: { name: "__host-sid" } }, "cookie.name", /__Host-/);
		refuses({ cookie: { name: "__SECURE-sid" } }, "cookie.name");
		refuses({ cookie: { path: "/; HttpOnly=false" } }, "cookie.path");
		refuses({ cookie: { path: "no-slash" } }, "cookie.path");
		refuses({ cookie: { domain: "example.com; Secure" } }, "cookie.domain");
		refuses({ cookie: { domain: "exa mple.com" } }, "cookie.domain");
		refuses({ cookie: { secure: "yes" } }, "cookie.secure");
		refuses({ cookie: { partitioned: true } }, "cookie.partitioned");
	});

	it("accepts strict, safe settings", () => {
		const { options } = createSessions({ cookie: { name: "__Host-sid", secure: true, sameSite: "strict", persist: true }, idleTimeout: 600, absoluteTimeout: 3600, touchAfter: 0 });
		assert.equal(options.cookie.name, "__Host-sid");
		assert.equal(options.touchAfterMs, 0);
	});

	it("refuses a cookie name a sealed cookie has no room for", () => {
		const store = cookieStore({ secrets: ["0123456789abcdef0123456789abcdef"] });
		refuses({ store, cookie: { name: "s".repeat(64) } }, "cookie.name", /shorter than 64/);
		assert.equal(createSessions({ store, cookie: { name: "s".repeat(63) } }).cookieName.length, 63);
	});

	it("gives the stores whole milliseconds, whatever the durations and the clock", async () => {
		const { options } = createSessions({ idleTimeout: 1000 / 3, absoluteTimeout: 2000 / 3, touchAfter: 0.0004 });
		assert.equal(options.idleTimeoutMs, 333_333);
		assert.equal(options.absoluteTimeoutMs, 666_667);
		assert.equal(options.touchAfterMs, 0);
		const written: number[] = [];
		const store = memoryStore({ sweepInterval: 0 });
		const set = store.set.bind(store);
		store.set = (key, record, expiresAt) => {
			written.push(record.createdAt, record.idleExpiresAt, record.absoluteExpiresAt, expiresAt);
			return set(key, record, expiresAt);
		};
		const sessions = createSessions({ store, idleTimeout: 1000 / 3, clock: () => 1_700_000_000_000.75 });
		await request(sessions, undefined, (s) => s.set("a", 1));
		assert.equal(written.length, 4);
		for (const instant of written) assert.ok(Number.isInteger(instant), `${instant} is whole milliseconds`);
	});

	it("refuses a clock that does not give epoch milliseconds", () => {
		refuses({ clock: "now" }, "clock");
		refuses({ clock: () => new Date() }, "clock", /finite number/);
		refuses({ clock: () => Number.NaN }, "clock");
	});

	it("gives its clock to the default memory store", async () => {
		let now = Date.parse("2020-01-01T00:00:00Z"); // long past, on the real clock
		const sessions = createSessions({ clock: () => now, idleTimeout: 600 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		assert.equal((await request(sessions, cookie)).session.get("a"), 1, "alive by the app's clock");
		now += 601_000;
		assert.equal(await sessions.gc(), 1);
	});

	it("refuses a store that does not implement the contract", () => {
		refuses({ store: { name: "broken", get() {} } }, "store", /set\(\)/);
		refuses({ store: "redis://localhost" }, "store");
	});

	it("refuses the memory store as a silent default in production", () => {
		const previous = process.env.NODE_ENV;
		process.env.NODE_ENV = "production";
		try {
			refuses({}, "store", /production/);
		} finally {
			if (previous === undefined) delete process.env.NODE_ENV;
			else process.env.NODE_ENV = previous;
		}
	});
});
