package app

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// The library records its Events through the client it is given, so they
// share the client-side rate limit with the PVs it creates: two Events per
// claim would leave a third of the request budget to the PVs. withEventSink
// hands the library a client whose Events come from another clientset (with
// a rate limiter of its own) and that leaves out the library's "Provisioning"
// Event: it only announces that provisioning started, is followed within
// milliseconds by ProvisioningSucceeded or ProvisioningFailed, and would cost
// the API server one write per claim. Events are best-effort either way: the
// recorder drops them when its queue is full.

// reasonProvisioning is the library's Normal Event before each Provision.
const reasonProvisioning = "Provisioning"

// withEventSink returns client with CoreV1().Events() served by events.
func withEventSink(client kubernetes.Interface, events corev1client.EventsGetter) kubernetes.Interface {
	return eventRoutedClient{Interface: client, core: eventRoutedCore{CoreV1Interface: client.CoreV1(), events: events}}
}

type eventRoutedClient struct {
	kubernetes.Interface
	core eventRoutedCore
}

func (c eventRoutedClient) CoreV1() corev1client.CoreV1Interface { return c.core }

type eventRoutedCore struct {
	corev1client.CoreV1Interface
	events corev1client.EventsGetter
}

func (c eventRoutedCore) Events(namespace string) corev1client.EventInterface {
	return quietEvents{c.events.Events(namespace)}
}

// quietEvents drops the "Provisioning" Event; the recorder writes through
// the *WithEventNamespace methods.
type quietEvents struct {
	corev1client.EventInterface
}

func skip(e *v1.Event) bool {
	return e.Type == v1.EventTypeNormal && e.Reason == reasonProvisioning
}

func (q quietEvents) CreateWithEventNamespace(e *v1.Event) (*v1.Event, error) {
	if skip(e) {
		return e, nil
	}
	return q.EventInterface.CreateWithEventNamespace(e)
}

func (q quietEvents) CreateWithEventNamespaceWithContext(ctx context.Context, e *v1.Event) (*v1.Event, error) {
	if skip(e) {
		return e, nil
	}
	return q.EventInterface.CreateWithEventNamespaceWithContext(ctx, e)
}

func (q quietEvents) PatchWithEventNamespace(e *v1.Event, data []byte) (*v1.Event, error) {
	if skip(e) {
		return e, nil
	}
	return q.EventInterface.PatchWithEventNamespace(e, data)
}

func (q quietEvents) PatchWithEventNamespaceWithContext(ctx context.Context, e *v1.Event, data []byte) (*v1.Event, error) {
	if skip(e) {
		return e, nil
	}
	return q.EventInterface.PatchWithEventNamespaceWithContext(ctx, e, data)
}
