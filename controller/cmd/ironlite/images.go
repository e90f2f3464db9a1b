package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
)

// openImages opens the image service: the simplestreams sources and the
// image cache in the data dir (<data-dir>/image-sources.json and
// <data-dir>/images/), serving cached images below bootURL.
func openImages(dataDir, bootURL string, st *store.Store, log *slog.Logger) (*imagestore.Store, error) {
	srcs, err := catalog.OpenSources(dataDir)
	if err != nil {
		return nil, fmt.Errorf("image sources: %w", err)
	}
	c, err := cache.Open(filepath.Join(dataDir, "images"), nil)
	if err != nil {
		return nil, err
	}
	return imagestore.New(imagestore.Config{
		Catalog: catalog.New(srcs, nil),
		Cache:   c,
		BaseURL: bootURL,
		Log:     log,
		InUse: func(ctx context.Context, sha string) ([]string, error) {
			var users []string
			for _, state := range []string{statemachine.Deploying, statemachine.DeployWait} {
				ns, err := st.ListNodes(ctx, store.NodeFilter{ProvisionState: state})
				if err != nil {
					return nil, err
				}
				users = append(users, agent.ImageUsers(ns, sha)...)
			}
			return users, nil
		},
	}), nil
}
