package main

import (
	"context"
	"fmt"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/kubernetes/pkg/controller/clusterroleaggregation"
)

// startControllers runs the kube-controller-manager controllers the e2e tests rely on, from
// kube-controller-manager's own packages, against the test server:
//
//   - clusterrole-aggregation: fills ClusterRoles with an aggregationRule (the built-in view,
//     edit and admin) from the ClusterRoles whose labels they select, so that a chart's
//     `aggregate-to-view` roles reach users bound to `view` as in a real cluster.
//
// They stop when the returned function is called.
func startControllers(kubeconfig []byte) (func(), error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("controllers: load kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("controllers: client: %w", err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	aggregation := clusterroleaggregation.NewClusterRoleAggregation(factory.Rbac().V1().ClusterRoles(), client.RbacV1())
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	go aggregation.Run(ctx, 1)
	return func() {
		cancel()
		factory.Shutdown()
	}, nil
}
