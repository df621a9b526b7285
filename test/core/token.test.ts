import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { generateToken, hashToken, isWellFormedKey, isWellFormedToken } from "sessionkit";
import { fromBase64Url, toBase64Url } from "../../src/core/crypto.js";

describe("tokens", () => {
	it("are 32 random bytes in base64url: 43 characters, no padding", () => {
		const token = generateToken();
		assert.match(token, /^[A-Za-z0-9_-]{43}$/);
		assert.equal(fromBase64Url(token)?.length, 32);
	});

	it("never repeat", () => {
		const seen = new Set(Array.from({ length: 10_000 }, generateToken));
		assert.equal(seen.size, 10_000);
	});

	it("hash to the SHA-256 hex of the token, which is the store key", async () => {
		const token = generateToken();
		const key = await hashToken(token);
		assert.equal(key, createHash("sha256").update(token).digest("hex"));
		assert.ok(isWellFormedKey(key));
	});

	it("accepts only the exact token shape", () => {
		assert.ok(isWellFormedToken(generateToken()));
		for (const bad of ["", "a", `${generateToken()}x`, generateToken().slice(1), `${generateToken().slice(1)}=`, `${generateToken().slice(1)}/`, `${generateToken().slice(1)}+`, "../".repeat(15).slice(0, 43), `${generateToken().slice(1)}\u00e9`]) {
			assert.equal(isWellFormedToken(bad), false, JSON.stringify(bad));
		}
	});
});

describe("base64url", () => {
	it("round-trips every length and byte value", () => {
		for (let length = 0; length < 70; length++) {
			const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + length) & 0xff);
			const text = toBase64Url(bytes);
			assert.equal(text, Buffer.from(bytes).toString("base64url"));
			assert.deepEqual(fromBase64Url(text), bytes);
		}
	});

	it("refuses characters outside the alphabet and impossible lengths", () => {
		assert.equal(fromBase64Url("ab+c"), null);
		assert.equal(fromBase64Url("ab=c"), null);
		assert.equal(fromBase64Url("abcde"), null);
	});
});
