package app

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestEventSink(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := fake.NewClientset()
	events := fake.NewClientset()
	routed := withEventSink(client, events.CoreV1())

	event := func(name, typ, reason string) *v1.Event {
		return &v1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Type: typ, Reason: reason}
	}
	sink := routed.CoreV1().Events("")
	_, err := sink.CreateWithEventNamespace(event("started", v1.EventTypeNormal, "Provisioning"))
	require.NoError(t, err)
	_, err = sink.CreateWithEventNamespaceWithContext(ctx, event("done", v1.EventTypeNormal, "ProvisioningSucceeded"))
	require.NoError(t, err)
	_, err = sink.CreateWithEventNamespace(event("failed", v1.EventTypeWarning, "ProvisioningFailed"))
	require.NoError(t, err)

	list, err := events.CoreV1().Events("ns").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, e := range list.Items {
		names = append(names, e.Name)
	}
	assert.ElementsMatch(t, []string{"done", "failed"}, names, "the Provisioning announcement is left out")
	list, err = client.CoreV1().Events("ns").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, list.Items, "events go through their own client")

	// Everything else goes to the main client.
	_, err = routed.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.CoreV1().PersistentVolumes().Get(ctx, "pv", metav1.GetOptions{})
	assert.NoError(t, err)
}
