package httpapi

import (
	"context"
	"time"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
)

// sandboxed returns the sandbox, or ENOTFOUND outside `whatsapp sandbox`.
func (s *server) sandboxed() (sandbox.Network, error) {
	if s.sandbox == nil {
		return nil, domain.Errorf(domain.ENOTFOUND, "the sandbox API is only served by `whatsapp sandbox`")
	}
	return s.sandbox, nil
}

func (s *server) SandboxCreatePhone(ctx context.Context, req api.SandboxCreatePhoneRequestObject) (api.SandboxCreatePhoneResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if req.Body == nil {
		return nil, invalid("body", "required")
	}
	var name string
	if req.Body.PushName != nil {
		name = *req.Body.PushName
	}
	phone, err := sb.CreatePhone(ctx, req.Body.Phone, name)
	if err != nil {
		return nil, err
	}
	return api.SandboxCreatePhone200JSONResponse{Code: 200, Message: ok, Data: api.SandboxPhone{
		Phone: phone.Phone, PushName: phone.PushName, Jid: phone.JID,
	}}, nil
}

func (s *server) SandboxScan(ctx context.Context, req api.SandboxScanRequestObject) (api.SandboxScanResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if req.Body == nil || req.Body.Qr == "" {
		return nil, invalid("qr", "required")
	}
	jid, err := sb.Scan(ctx, req.Phone, req.Body.Qr)
	if err != nil {
		return nil, err
	}
	return api.SandboxScan200JSONResponse{Code: 200, Message: "linked", Data: api.SandboxLink{Jid: jid}}, nil
}

func (s *server) SandboxLinkCode(ctx context.Context, req api.SandboxLinkCodeRequestObject) (api.SandboxLinkCodeResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if req.Body == nil || req.Body.Code == "" {
		return nil, invalid("code", "required")
	}
	jid, err := sb.EnterCode(ctx, req.Phone, req.Body.Code)
	if err != nil {
		return nil, err
	}
	return api.SandboxLinkCode200JSONResponse{Code: 200, Message: "linked", Data: api.SandboxLink{Jid: jid}}, nil
}

func (s *server) SandboxListDevices(ctx context.Context, req api.SandboxListDevicesRequestObject) (api.SandboxListDevicesResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	devs, err := sb.Devices(ctx, req.Phone)
	if err != nil {
		return nil, err
	}
	out := make([]api.SandboxDevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, api.SandboxDevice{Jid: d.JID, LinkedAt: d.LinkedAt.UTC(), Online: d.Online})
	}
	return api.SandboxListDevices200JSONResponse{Code: 200, Message: ok, Data: out}, nil
}

func (s *server) SandboxRemoveDevice(ctx context.Context, req api.SandboxRemoveDeviceRequestObject) (api.SandboxRemoveDeviceResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if err := sb.RemoveDevice(ctx, req.Phone, req.Jid); err != nil {
		return nil, err
	}
	return api.SandboxRemoveDevice200JSONResponse{Code: 200, Message: "device removed"}, nil
}

func (s *server) SandboxListMessages(ctx context.Context, req api.SandboxListMessagesRequestObject) (api.SandboxListMessagesResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	msgs, err := sb.Messages(ctx, req.Phone)
	if err != nil {
		return nil, err
	}
	out := make([]api.SandboxMessage, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, api.SandboxMessage{
			From: m.From, ID: m.ID, Timestamp: m.Timestamp.UTC(), Text: m.Text, Chat: m.Chat, FromMe: m.FromMe,
		})
	}
	return api.SandboxListMessages200JSONResponse{Code: 200, Message: ok, Data: out}, nil
}

func (s *server) SandboxConnections(ctx context.Context, _ api.SandboxConnectionsRequestObject) (api.SandboxConnectionsResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	c, err := sb.Connections(ctx)
	if err != nil {
		return nil, err
	}
	return api.SandboxConnections200JSONResponse{Code: 200, Message: ok, Data: api.SandboxConnections{
		Open: c.Open, LoggedIn: c.LoggedIn, ByDevice: nonNilMap(c.ByDevice), Attempts: c.Attempts, MaxByDevice: nonNilMap(c.MaxByDevice),
	}}, nil
}

func nonNilMap(m map[string]int) map[string]int {
	if m == nil {
		return map[string]int{}
	}
	return m
}

func (s *server) SandboxCertificateRoot(ctx context.Context, _ api.SandboxCertificateRootRequestObject) (api.SandboxCertificateRootResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	key, err := sb.CertificateRoot(ctx)
	if err != nil {
		return nil, err
	}
	return api.SandboxCertificateRoot200JSONResponse{Code: 200, Message: ok, Data: api.SandboxCertificateRoot{PublicKey: key[:]}}, nil
}

// maxRefuse bounds a refusal, so that a typo cannot take the sandbox down
// for days.
const maxRefuse = time.Hour

func (s *server) SandboxNetworkFault(ctx context.Context, req api.SandboxNetworkFaultRequestObject) (api.SandboxNetworkFaultResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if req.Body == nil {
		return nil, invalid("body", "required")
	}
	var fault sandbox.NetworkFault
	if req.Body.Drop != nil {
		fault.Drop = *req.Body.Drop
	}
	if secs := req.Body.RefuseSeconds; secs != nil {
		// Checked before converting: a huge number would overflow into a
		// short, valid-looking duration.
		if *secs < 0 || *secs > int(maxRefuse/time.Second) {
			return nil, invalid("refuse_seconds", "must be between 0 and 3600")
		}
		fault.Refuse = time.Duration(*secs) * time.Second
	}
	n, err := sb.Disrupt(ctx, fault)
	if err != nil {
		return nil, err
	}
	return api.SandboxNetworkFault200JSONResponse{Code: 200, Message: ok, Data: api.SandboxNetworkFaultResult{Dropped: n}}, nil
}

func (s *server) SandboxSend(ctx context.Context, req api.SandboxSendRequestObject) (api.SandboxSendResponseObject, error) {
	sb, err := s.sandboxed()
	if err != nil {
		return nil, err
	}
	if req.Body == nil || req.Body.To == "" {
		return nil, invalid("to", "required")
	}
	if req.Body.Message == "" {
		return nil, invalid("message", "required")
	}
	sent, err := sb.SendFromPhone(ctx, req.Phone, req.Body.To, req.Body.Message)
	if err != nil {
		return nil, err
	}
	return api.SandboxSend200JSONResponse{Code: 200, Message: ok, Data: api.SandboxSent{
		MessageID: sent.ID, Timestamp: sent.Timestamp, Delivered: nonNil(sent.Delivered), Offline: nonNil(sent.Offline),
	}}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
