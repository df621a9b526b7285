/**
 * The runnable demo (`npm start`) on Express 5: the demo routes, a home page, 404 and 405
 * answers, and an error handler that never shows a stack trace. `server.ts` runs it;
 * test/demo tests it.
 */
import express from "express";
import type { ErrorRequestHandler, Express, Request, RequestHandler, Response } from "express";
import type { SessionManager } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/express";

/** What the demo keeps in a session. */
export interface DemoData {
	authenticated?: boolean;
	user_id?: number;
	visits?: number;
}

/** Options of {@link createDemoApp}. */
export interface DemoOptions {
	/** Log errors that become 500 responses (with console.error). @default true */
	logErrors?: boolean;
}

type Handler = (req: Request, res: Response) => void;

function text(res: Response, status: number, body: string): void {
	res.status(status).type("text/plain").send(body);
}

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: string): string {
	return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

const routes: Record<string, Handler> = {
	"/": home,
	"/login"(req, res) {
		const session = getSession<DemoData>(req);
		session.set("authenticated", true);
		session.renew(); // a new token at every privilege change: no session fixation
		// "Remember me": a cookie that outlives the browser, for this session only.
		if (req.query.remember === "1") session.rememberMe = true;
		text(res, 200, "Logged in");
	},
	"/logout"(req, res) {
		getSession<DemoData>(req).destroy();
		text(res, 200, "Logged out");
	},
	"/secret"(req, res) {
		if (getSession<DemoData>(req).get("authenticated") === true) text(res, 200, "The cake is a lie!");
		else text(res, 403, "Forbidden");
	},
	"/set"(req, res) {
		getSession<DemoData>(req).set("user_id", 123);
		text(res, 200, "Succeed");
	},
	"/get"(req, res) {
		const userId = getSession<DemoData>(req).get("user_id");
		text(res, 200, userId === undefined ? "Not authenticated" : `Authenticated as ${userId}`);
	},
	"/clear"(req, res) {
		getSession<DemoData>(req).delete("user_id");
		text(res, 200, "Cleared");
	},
	"/flash/set"(req, res) {
		getSession<DemoData>(req).flash("message", "This is a flash message");
		text(res, 200, "Succeed");
	},
	"/flash/get"(req, res) {
		text(res, 200, getSession<DemoData>(req).flash<string>("message") ?? "No flash message");
	},
};

function home(req: Request, res: Response): void {
	const session = getSession<DemoData>(req);
	const visits = session.increment("visits");
	const flash = session.flash<string>("message");
	const links = Object.keys(routes)
		.filter((path) => path !== "/")
		.map((path) => `<li><a href="${escapeHtml(path)}">${escapeHtml(path)}</a></li>`)
		.join("\n");
	res.type("html").send(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>sessionkit demo</title>
<h1>sessionkit demo</h1>
<p>Visits: ${visits}</p>
${flash === undefined ? "" : `<p class="flash">${escapeHtml(flash)}</p>\n`}<ul>
${links}
</ul>
</html>
`);
}

const methodNotAllowed: RequestHandler = (_req, res) => {
	res.set("Allow", "GET, HEAD");
	text(res, 405, "Method Not Allowed");
};

/**
 * The demo app. Errors (a failing store included) become a plain 500.
 *
 * @example
 * createDemoApp(createSessions<DemoData>({ store })).listen(3000);
 */
export function createDemoApp(sessions: SessionManager<DemoData>, options: DemoOptions = {}): Express {
	const logErrors = options.logErrors ?? true;
	const app = express();
	app.disable("x-powered-by");
	app.use(sessionMiddleware(sessions));

	// HEAD reaches the GET handler: Express routes it there when no HEAD handler is set.
	for (const [path, handler] of Object.entries(routes)) app.route(path).get(handler).all(methodNotAllowed);
	app.use((_req, res) => text(res, 404, "Not Found"));

	const onError: ErrorRequestHandler = (error, _req, res, _next) => {
		if (logErrors) console.error(error);
		// Too late for a status: cut the response short rather than leave it looking complete.
		if (res.headersSent) res.destroy();
		else text(res, 500, "Internal Server Error");
	};
	app.use(onError);
	return app;
}
