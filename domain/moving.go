package domain

import "errors"

// ErrMoving marks the refusal of a call for a device that this replica
// stopped running because it is moving to another replica (several
// replicas on one database): nothing of the call was carried out, so the
// edge can route it again to the device's new replica.
var ErrMoving = errors.New("the device is moving to another replica")
