// Package middleware holds the chi middleware that guards and observes the
// gateway's HTTP API: Basic authentication with credential rotation, the
// client-IP rule for trusted reverse proxies, throttling of failed logins,
// the access log, body limits and read timeouts, Host and cross-site
// checks, panic recovery and Prometheus metrics.
//
// Every answer it writes itself goes through package envelope, so clients
// see the same JSON shape whether a handler or a middleware answered.
//
// The order adapters/httpapi uses, outermost first: RequestID and ClientIP
// (as RequestContext, around the router), AccessLog, Metrics, Recoverer, ReadTimeout, SiteGuard, MaxBody, Throttle,
// Auth. ClientIP must run before anything that calls ClientIPFrom (the
// access log, the throttle); AccessLog and Metrics outside Recoverer, so
// that they see a panic's 500; ReadTimeout inside them and outside anything
// that may answer without reading the body, so that a request is logged
// only once its answer can go out; SiteGuard before Auth, so that a
// browser's cached credentials take a refused request no further.
//
// adapters/httpapi answers its hot path, GET /devices/{id}/status, in front
// of this chain rather than through it, with the same pieces: Allows and
// Refuses to check without answering (it leaves refusals to the chain),
// RequestIDs.Assign, WriteAccessLine, Metrics.Series and Recovered.
package middleware
