package middleware

import "context"

// NoteForwardedTo records that the request was handed to the replica
// named (its id), for the access log's forwarded_to.
func NoteForwardedTo(ctx context.Context, replica string) {
	if info := infoFrom(ctx); info != nil {
		info.forwardedTo = replica
	}
}

// NoteForwardedFrom records that the request came from the replica named,
// on behalf of clientIP: from here on ClientIPFrom is the caller's address
// as the first replica saw it, and the access log adds forwarded_from. Call
// it only for a request whose origin was verified (a signature only the
// replicas can make): anyone else could choose their own address with it.
func NoteForwardedFrom(ctx context.Context, replica, clientIP string) {
	if info := infoFrom(ctx); info != nil {
		info.forwardedFrom = replica
		if clientIP != "" {
			info.ip = clientIP
		}
	}
}
