package app

import (
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// trim drops from cached objects what the provisioner never reads, to keep
// memory flat with tens of thousands of claims and volumes: managed fields
// everywhere, kubectl's copy of the last applied object, and all of a Node
// but its name (the library only checks that the selected node exists).
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Node:
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}, nil
	case metav1.Object:
		o.SetManagedFields(nil)
		if a := o.GetAnnotations(); a != nil {
			delete(a, v1.LastAppliedConfigAnnotation)
		}
	}
	return obj, nil
}
