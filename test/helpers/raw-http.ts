/**
 * Requests written byte for byte, over TCP or TLS, for what `fetch` never sends: a request line
 * in absolute form (`GET https://example.com/ HTTP/1.1`, as a client talking to a proxy writes
 * it). And a throwaway self-signed certificate for a real TLS server.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as connectTls } from "node:tls";

/** True when the `openssl` command is there to make a certificate. */
export const hasOpenSSL: boolean = (() => {
	try {
		execFileSync("openssl", ["version"], { stdio: "ignore" });
		return true;
	} catch {
		return false;
	}
})();

/** A key and a certificate for 127.0.0.1, valid for a day (needs `openssl`). */
export function selfSignedCert(): { key: Buffer; cert: Buffer } {
	const dir = mkdtempSync(join(tmpdir(), "sessionkit-tls-"));
	try {
		const keyFile = join(dir, "key.pem");
		const certFile = join(dir, "cert.pem");
		execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", certFile], { stdio: "ignore" });
		return { key: readFileSync(keyFile), cert: readFileSync(certFile) };
	} finally {
		rmSync(dir, { recursive: true, force: true });
	}
}

/** A response's status and its `Set-Cookie` lines. */
export interface RawReply {
	status: number;
	setCookies: string[];
}

/**
 * Sends `head` (the request line and headers, without the blank line that ends them) to
 * 127.0.0.1:`port` as written, over TLS when `ca` (the server's certificate) is given, with
 * `Connection: close`, and reads the answer to the end.
 */
export function rawRequest(port: number, head: string, ca?: Buffer): Promise<RawReply> {
	return new Promise((resolve, reject) => {
		const socket = ca === undefined ? connectTcp({ host: "127.0.0.1", port }) : connectTls({ host: "127.0.0.1", port, ca });
		const chunks: Buffer[] = [];
		socket.on("data", (chunk: Buffer) => chunks.push(chunk));
		socket.on("error", reject);
		socket.on("end", () => resolve(parseHead(Buffer.concat(chunks).toString("latin1"))));
		socket.write(`${head}\r\nConnection: close\r\n\r\n`);
	});
}

function parseHead(text: string): RawReply {
	const lines = text.slice(0, text.indexOf("\r\n\r\n")).split("\r\n");
	const status = Number(lines[0]!.split(" ")[1]);
	const setCookies = lines.filter((line) => /^set-cookie:/i.test(line)).map((line) => line.slice(line.indexOf(":") + 1).trim());
	return { status, setCookies };
}
