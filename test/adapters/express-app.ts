/**
 * The demo routes on Express, for the conformance suite on Express 4 and 5 alike (the
 * runnable Express demo is examples/demo). `express` is the framework's default export.
 */
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { ErrorRequestHandler, Express } from "express";
import { SessionError } from "sessionkit";
import type { AppSessionData, SessionManager } from "sessionkit";
import { sessionMiddleware } from "sessionkit/express";

async function* streamedBody(): AsyncGenerator<string> {
	for (const chunk of ["Streaming ", "the ", "body"]) {
		yield chunk;
		await sleep(5);
	}
}

export function createExpressApp(express: () => Express, sessions: SessionManager<AppSessionData>, options: { trustProxy: boolean }): Express {
	const app = express();
	app.set("trust proxy", options.trustProxy);
	app.use(sessionMiddleware(sessions));

	app.get("/login", (req, res) => {
		req.session.set("authenticated", true);
		req.session.renew();
		res.send("Logged in");
	});
	app.get("/logout", (req, res) => {
		req.session.destroy();
		res.send("Logged out");
	});
	app.get("/secret", (req, res) => {
		if (req.session.get("authenticated") === true) res.send("The cake is a lie!");
		else res.status(403).send("Forbidden");
	});
	app.get("/set", (req, res) => {
		req.session.set("user_id", 123);
		res.send("Succeed");
	});
	app.get("/get", (req, res) => {
		const userId = req.session.get("user_id");
		res.send(userId === undefined ? "Not authenticated" : `Authenticated as ${String(userId)}`);
	});
	app.get("/clear", (req, res) => {
		req.session.clear();
		res.send("Cleared");
	});
	app.get("/flash/set", (req, res) => {
		req.session.flash("message", "This is a flash message");
		res.send("Succeed");
	});
	app.get("/flash/get", (req, res) => {
		res.send(req.session.flash<string>("message") ?? "No flash message");
	});
	app.get("/counter", (req, res) => {
		res.send(`Visits: ${req.session.increment("visits")}`);
	});
	app.get("/theme", (req, res) => {
		res.cookie("theme", "dark", { sameSite: "lax" });
		res.vary("Accept-Language");
		req.session.set("theme", "dark");
		res.send("Theme: dark");
	});
	app.get("/throw", (req) => {
		req.session.set("user_id", 666);
		throw new Error("boom");
	});
	app.get("/stream", (req, res) => {
		req.session.set("user_id", 123);
		res.type("text/plain");
		Readable.from(streamedBody()).pipe(res);
	});

	app.use(answerWithCode);
	return app;
}

/** The suite's error handler: 500 `Error: <code>`, the code of a `SessionError` or `INTERNAL`. */
export const answerWithCode: ErrorRequestHandler = (error, _req, res, next) => {
	if (res.headersSent) return next(error);
	res.status(500).type("text/plain").send(`Error: ${error instanceof SessionError ? error.code : "INTERNAL"}`);
};
