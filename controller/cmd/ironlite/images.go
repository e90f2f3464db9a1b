package main

import (
	"context"
	"log/slog"

	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// openImages opens the image service: the simplestreams sources and the
// image cache in the data dir (<data-dir>/image-sources.json and
// <data-dir>/images/), serving cached images below bootURL.
func openImages(dataDir, bootURL string, st *store.Store, log *slog.Logger) (*imagestore.Store, error) {
	return imagestore.Open(dataDir, imagestore.Config{
		BaseURL: bootURL,
		Log:     log,
		InUse: func(ctx context.Context) (map[string][]string, error) {
			var ns []*model.Node
			for _, state := range []string{statemachine.Deploying, statemachine.DeployWait} {
				more, err := st.ListNodes(ctx, store.NodeFilter{ProvisionState: state})
				if err != nil {
					return nil, err
				}
				ns = append(ns, more...)
			}
			return agent.ImagesInUse(ns), nil
		},
	})
}
