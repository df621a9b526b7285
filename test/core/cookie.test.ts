import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse, serialize } from "cookie";
import { readSessionCookie, serializeExpiredCookie, serializeSessionCookie } from "../../src/core/cookie.js";
import type { ResolvedOptions } from "../../src/core/options.js";

describe("reading the session cookie", () => {
	it("finds it among other cookies, with or without spaces", () => {
		assert.deepEqual(readSessionCookie("a=1; sid=abc; b=2", "sid", 64), { kind: "value", value: "abc" });
		assert.deepEqual(readSessionCookie("sid=abc", "sid", 64), { kind: "value", value: "abc" });
		assert.deepEqual(readSessionCookie("a=1;sid=abc", "sid", 64), { kind: "value", value: "abc" });
	});

	it("reads the value as sent, without percent-decoding (a token has one spelling only)", () => {
		assert.deepEqual(readSessionCookie("sid=%41bc", "sid", 64), { kind: "value", value: "%41bc" });
	});

	it("does not mistake a cookie whose name ends or starts with the session name", () => {
		assert.deepEqual(readSessionCookie("xsid=abc; sidx=def", "sid", 64), { kind: "absent" });
		assert.deepEqual(readSessionCookie("other=sid=abc", "sid", 64), { kind: "absent" });
	});

	it("treats an absent header, an absent cookie or an empty value as no session", () => {
		assert.deepEqual(readSessionCookie(undefined, "sid", 64), { kind: "absent" });
		assert.deepEqual(readSessionCookie("", "sid", 64), { kind: "absent" });
		assert.deepEqual(readSessionCookie("sid=", "sid", 64), { kind: "absent" });
	});

	it("rejects two cookies of the same name (cookie tossing)", () => {
		assert.deepEqual(readSessionCookie("sid=abc; sid=def", "sid", 64), { kind: "rejected", reason: "duplicated" });
		assert.deepEqual(readSessionCookie("sid=abc;a=1;  sid=def", "sid", 64), { kind: "rejected", reason: "duplicated" });
	});

	it("does not count a cookie whose name only starts with the session name and a space as a second session cookie", () => {
		// Browsers keep a name with an inner space ("sid x"); the header holds one session cookie.
		assert.deepEqual(readSessionCookie("sid x=1; sid=abc", "sid", 64), { kind: "value", value: "abc" });
		assert.deepEqual(readSessionCookie("sid=abc; sid x=1", "sid", 64), { kind: "value", value: "abc" });
		assert.deepEqual(readSessionCookie("sid\tx=1;sid =abc", "sid", 64), { kind: "value", value: "abc" });
		assert.deepEqual(readSessionCookie("sid x=1; sid =abc; sid\t=def", "sid", 64), { kind: "rejected", reason: "duplicated" });
	});

	it("rejects an oversized value", () => {
		assert.deepEqual(readSessionCookie(`sid=${"a".repeat(65)}`, "sid", 64), { kind: "rejected", reason: "oversized" });
	});

	it("reads the value the cookie package parses from the whole header, from the session cookie's pair alone", () => {
		const headers = ["a=1; sid = abc ; b=2", "sid\t=\tabc\t;x=1", "foo; sid=abc", "sid x=1", "sid ;x=1", "a=b=c; sid=x=y; c=d", "sid=abc;", '  sid="q"  ', "a=1; sid"];
		for (const header of headers) {
			const parsed = parse(header, { decode: (value) => value }).sid;
			const expected = parsed === undefined || parsed === "" ? { kind: "absent" } : { kind: "value", value: parsed };
			assert.deepEqual(readSessionCookie(header, "sid", 64), expected, header);
		}
	});

	it("survives hostile headers without throwing", () => {
		for (const header of ["sid=%", "sid=%E0%A4%A", ";;;;", "=;=;sid", "sid", "\u0000sid=a", `sid=${"%".repeat(1000)}`]) {
			assert.doesNotThrow(() => readSessionCookie(header, "sid", 64), header);
		}
	});
});

describe("writing the session cookie", () => {
	it("writes exactly what the cookie package would, for every combination of attributes", () => {
		const keep = (value: string) => value;
		let checked = 0;
		for (const name of ["sid", "__Host-s"]) for (const path of ["/", "/app"]) for (const domain of [undefined, "example.com"]) {
			for (const sameSite of ["lax", "strict", "none"]) for (const httpOnly of [true, false]) for (const partitioned of [true, false]) {
				const cookie: ResolvedOptions["cookie"] = { name, path, domain, sameSite: sameSite as "lax", secure: "auto", httpOnly, persist: false, partitioned };
				for (const secure of [true, false]) {
					const options = { path, domain, httpOnly, secure, sameSite: sameSite as "lax", partitioned: partitioned || undefined, encode: keep };
					for (const maxAge of [undefined, 900]) {
						assert.equal(serializeSessionCookie(cookie, "v1.Ab-_9", secure, maxAge), serialize(name, "v1.Ab-_9", { ...options, maxAge }));
					}
					assert.equal(serializeExpiredCookie(cookie, secure), serialize(name, "", { ...options, maxAge: 0, expires: new Date(0) }));
					checked++;
				}
			}
		}
		assert.equal(checked, 192);
	});
});
