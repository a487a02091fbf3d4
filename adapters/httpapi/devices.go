package httpapi

import (
	"context"
	"encoding/base64"
	"math"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/qrpng"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
)

// Devices is what the handlers need of the device service.
type Devices interface {
	List(ctx context.Context) []domain.Status
	Get(ctx context.Context, id string) (domain.Status, error)
	Create(ctx context.Context, id string) (domain.Status, error)
	Delete(ctx context.Context, id string) (warning string, err error)
	LoginQR(ctx context.Context, id string) (device.QR, error)
	LoginCode(ctx context.Context, id, phone string) (device.PairingCode, error)
	Logout(ctx context.Context, id string) (domain.Status, error)
	Reconnect(ctx context.Context, id string) (domain.Status, error)
	Send(ctx context.Context, id, to, text string) (domain.SentMessage, string, error)
}

var _ Devices = (*device.Service)(nil)

// Listing lists every device from a store that can fail (the shared store
// of several replicas).
type Listing interface {
	List(ctx context.Context) ([]domain.Status, error)
}

// QRRenderer draws the login QR codes the device service hands out as text.
type QRRenderer interface {
	// PNG returns text encoded as a QR code in a PNG image.
	PNG(text string) ([]byte, error)
}

var _ QRRenderer = (*qrpng.Renderer)(nil)

const ok = "OK"

func (s *server) ListDevices(ctx context.Context, _ api.ListDevicesRequestObject) (api.ListDevicesResponseObject, error) {
	var sts []domain.Status
	if s.listing != nil {
		var err error
		if sts, err = s.listing.List(ctx); err != nil {
			return nil, err
		}
	} else {
		sts = s.devices.List(ctx)
	}
	out := make([]api.Device, 0, len(sts))
	for _, st := range sts {
		out = append(out, s.toDevice(st))
	}
	return api.ListDevices200JSONResponse{Code: 200, Message: ok, Data: out}, nil
}

func (s *server) CreateDevice(ctx context.Context, req api.CreateDeviceRequestObject) (api.CreateDeviceResponseObject, error) {
	var id string
	if req.Body != nil && req.Body.DeviceID != nil {
		id = *req.Body.DeviceID
		if id == "" {
			return nil, invalid("device_id", "must not be empty; leave it out to get a generated id")
		}
	}
	st, err := s.devices.Create(ctx, id)
	if err != nil {
		return nil, err
	}
	return api.CreateDevice201JSONResponse{Code: 201, Message: "Created", Data: s.toDevice(st)}, nil
}

func (s *server) GetDevice(ctx context.Context, req api.GetDeviceRequestObject) (api.GetDeviceResponseObject, error) {
	st, err := s.devices.Get(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	return s.newDeviceAnswer(200, ok, st), nil
}

func (s *server) GetDeviceStatus(ctx context.Context, req api.GetDeviceStatusRequestObject) (api.GetDeviceStatusResponseObject, error) {
	st, err := s.devices.Get(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	return s.newDeviceAnswer(200, ok, st), nil
}

func (s *server) DeleteDevice(ctx context.Context, req api.DeleteDeviceRequestObject) (api.DeleteDeviceResponseObject, error) {
	warning, err := s.devices.Delete(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	msg := "device deleted"
	if warning != "" {
		msg += "; " + warning
	}
	return api.DeleteDevice200JSONResponse{Code: 200, Message: msg}, nil
}

func (s *server) LoginQR(ctx context.Context, req api.LoginQRRequestObject) (api.LoginQRResponseObject, error) {
	qr, err := s.devices.LoginQR(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	png, err := s.qr.PNG(qr.Text)
	if err != nil {
		return nil, domain.Wrap(domain.EINTERNAL, err, "render QR code")
	}
	return api.LoginQR200JSONResponse{Code: 200, Message: ok, Data: api.LoginQR{
		QrCode:     "data:image/png;base64," + base64.StdEncoding.EncodeToString(png),
		QrDuration: s.secondsLeft(qr.ExpiresAt),
		QrString:   qr.Text,
	}}, nil
}

func (s *server) LoginCode(ctx context.Context, req api.LoginCodeRequestObject) (api.LoginCodeResponseObject, error) {
	var phone string
	if req.Body != nil && req.Body.Phone != nil {
		phone = *req.Body.Phone
	}
	if phone == "" && req.Params.Phone != nil {
		phone = *req.Params.Phone
	}
	if phone == "" {
		return nil, invalid("phone", "required, in the body or as the phone query parameter")
	}
	code, err := s.devices.LoginCode(ctx, req.DeviceID, phone)
	if err != nil {
		return nil, err
	}
	return api.LoginCode200JSONResponse{Code: 200, Message: ok, Data: api.LoginCode{
		Code:     code.Code,
		Duration: s.secondsLeft(code.ExpiresAt),
	}}, nil
}

func (s *server) LogoutDevice(ctx context.Context, req api.LogoutDeviceRequestObject) (api.LogoutDeviceResponseObject, error) {
	st, err := s.devices.Logout(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	return api.LogoutDevice200JSONResponse{Code: 200, Message: "logged out", Data: s.toDevice(st)}, nil
}

func (s *server) ReconnectDevice(ctx context.Context, req api.ReconnectDeviceRequestObject) (api.ReconnectDeviceResponseObject, error) {
	st, err := s.devices.Reconnect(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	return api.ReconnectDevice200JSONResponse{Code: 200, Message: "reconnecting", Data: s.toDevice(st)}, nil
}

func (s *server) SendMessage(ctx context.Context, req api.SendMessageRequestObject) (api.SendMessageResponseObject, error) {
	if req.Body == nil {
		return nil, invalid("body", "required")
	}
	var id string
	if req.Params.XDeviceID != nil {
		id = *req.Params.XDeviceID
	}
	msg, sender, err := s.devices.Send(ctx, id, req.Body.Phone, req.Body.Message)
	if err != nil {
		return nil, err
	}
	return api.SendMessage200JSONResponse{Code: 200, Message: "sent", Data: api.SentMessage{
		MessageID: msg.ID,
		Timestamp: msg.Timestamp.UTC(),
		DeviceID:  sender,
	}}, nil
}

// secondsLeft rounds the time until t up to whole seconds, never below 0.
func (s *server) secondsLeft(t time.Time) int {
	left := t.Sub(s.clock.Now()).Seconds()
	return int(math.Max(0, math.Ceil(left)))
}

func (s *server) toDevice(st domain.Status) api.Device {
	var d api.Device
	s.fillDevice(&d, new([5]string), st)
	return d
}

// fillDevice sets d from st; d's optional strings point into opt.
func (s *server) fillDevice(d *api.Device, opt *[5]string, st domain.Status) {
	*opt = [5]string{st.Identity.JID, st.Identity.Phone, st.Identity.PushName, st.Identity.Platform, st.LastError}
	*d = api.Device{
		DeviceID:   st.DeviceID,
		State:      api.DeviceState(st.State),
		Reason:     optionalReason(st.Reason),
		Jid:        optionalIn(opt, 0),
		Phone:      optionalIn(opt, 1),
		PushName:   optionalIn(opt, 2),
		Platform:   optionalIn(opt, 3),
		LoggedIn:   st.LoggedIn,
		Connected:  st.Connected,
		StateSince: st.Since.UTC(),
		LastError:  optionalIn(opt, 4),
		CreatedAt:  st.CreatedAt.UTC(),
		Sandbox:    s.sandbox != nil,
	}
	if p := st.Pairing; p != nil {
		d.Pairing = &api.PairingInfo{Method: api.PairingInfoMethod(p.Method), ExpiresAt: p.ExpiresAt.UTC()}
	}
}

// optionalReason returns nil for no reason, so that JSON shows null.
func optionalReason(r domain.Reason) *api.DeviceReason {
	if r == domain.ReasonNone {
		return nil
	}
	v := api.DeviceReason(r)
	return &v
}

// optionalIn returns &opt[i], or nil when it is "".
func optionalIn(opt *[5]string, i int) *string {
	if opt[i] == "" {
		return nil
	}
	return &opt[i]
}
