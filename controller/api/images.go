package api

// The image catalogue API is an ironlite extension (Ironic has no image
// service of its own; it uses Glance). It lives under /v1 like the rest
// so clients send the same headers, but needs no microversion.
//
//	GET    /v1/images                       cached images and imports
//	POST   /v1/images                       {"ref": ..., "checksum": "sha256:<hex>", "disk_format": ..., "arch": ...} -> 202
//	GET    /v1/images/{id}                  id: sha256 (or an 8+ digit prefix), name or reference
//	DELETE /v1/images/{id}                  409 while a deploy uses it or it is being imported
//	GET    /v1/image_sources                the simplestreams sources
//	POST   /v1/image_sources                {"name": ..., "url": ...}
//	DELETE /v1/image_sources/{name}
//	GET    /v1/image_sources/{name}/images  what the source offers

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
)

// resolveTimeout bounds the index fetches of a request (imports
// themselves run in the background).
const resolveTimeout = 60 * time.Second

func (s *Server) imageRoutes(v1 *echo.Group) {
	v1.GET("/images", s.listImages)
	v1.POST("/images", s.importImage)
	v1.GET("/images/:image", s.showImage)
	v1.DELETE("/images/:image", s.deleteImage)
	v1.GET("/image_sources", s.listImageSources)
	v1.POST("/image_sources", s.addImageSource)
	v1.DELETE("/image_sources/:source", s.removeImageSource)
	v1.GET("/image_sources/:source/images", s.listRemoteImages)
}

func (s *Server) images() (*imagestore.Store, error) {
	if s.cfg.Images == nil {
		return nil, apiErr(http.StatusNotFound, "The image service is not enabled on this controller.")
	}
	return s.cfg.Images, nil
}

// imageError maps the image service's errors onto status codes.
func imageError(err error) error {
	switch {
	case errors.Is(err, imagestore.ErrNotFound), errors.Is(err, cache.ErrNotFound):
		return apiErr(http.StatusNotFound, "%s", err)
	case errors.Is(err, imagestore.ErrInUse):
		return apiErr(http.StatusConflict, "%s", err)
	case errors.Is(err, catalog.ErrUnknownSource), errors.Is(err, catalog.ErrUnknownAlias),
		errors.Is(err, catalog.ErrInvalidReference), errors.Is(err, catalog.ErrInvalidSource), errors.Is(err, cache.ErrInvalid):
		return badRequest("%s", err)
	case errors.Is(err, catalog.ErrUnreachable), errors.Is(err, catalog.ErrBadStream):
		return apiErr(http.StatusBadGateway, "%s", err)
	case errors.Is(err, context.DeadlineExceeded):
		return apiErr(http.StatusGatewayTimeout, "%s", err)
	}
	return err
}

type imageView struct {
	imagestore.Image
	Links []link `json:"links"`
}

func (s *Server) renderImage(c echo.Context, img imagestore.Image) imageView {
	return imageView{Image: img, Links: links(s.baseURL(c), "images", img.ID)}
}

// imageParam is the {image} path element, unescaped: a reference such as
// "images:centos/9-Stream" arrives as "images:centos%2F9-Stream".
func imageParam(c echo.Context) string {
	if id, err := url.PathUnescape(c.Param("image")); err == nil {
		return id
	}
	return c.Param("image")
}

func (s *Server) listImages(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	imgs, err := st.List(c.Request().Context())
	if err != nil {
		return imageError(err)
	}
	out := make([]imageView, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, s.renderImage(c, img))
	}
	return c.JSON(http.StatusOK, map[string]any{"images": out})
}

func (s *Server) showImage(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	img, err := st.Get(c.Request().Context(), imageParam(c))
	if err != nil {
		return imageError(err)
	}
	return c.JSON(http.StatusOK, s.renderImage(c, img))
}

func (s *Server) importImage(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	var req struct {
		Ref        string `json:"ref"`
		Checksum   string `json:"checksum"`
		DiskFormat string `json:"disk_format"`
		Arch       string `json:"arch"`
		Size       int64  `json:"size"`
	}
	if err := decodeBodyStrict(c, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Ref) == "" {
		return badRequest("Missing \"ref\": the image to import, e.g. images:centos/9-Stream, ubuntu:24.04, https://host/image.qcow2 (with \"checksum\": \"sha256:<hex>\") or file:///path.")
	}
	opt := catalog.Options{Arch: req.Arch, DiskFormat: req.DiskFormat, Size: req.Size}
	if req.Checksum != "" {
		algo, value, ok := strings.Cut(req.Checksum, ":")
		if !ok {
			return badRequest("Invalid \"checksum\" %q: expected algo:hex, e.g. sha256:<64 hex digits>.", req.Checksum)
		}
		opt.Checksum = catalog.Checksum{Algo: algo, Value: value}
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), resolveTimeout)
	defer cancel()
	img, err := st.Start(ctx, req.Ref, opt)
	if err != nil {
		return imageError(err)
	}
	code := http.StatusAccepted
	if img.State == imagestore.Active {
		code = http.StatusOK
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/images/"+img.ID)
	return c.JSON(code, s.renderImage(c, img))
}

func (s *Server) deleteImage(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	if err := st.Delete(c.Request().Context(), imageParam(c)); err != nil {
		return imageError(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listImageSources(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"sources": st.Sources().List()})
}

func (s *Server) addImageSource(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	var req catalog.Source
	if err := decodeBodyStrict(c, &req); err != nil {
		return err
	}
	if err := st.Sources().Add(req.Name, req.URL); err != nil {
		return imageError(err)
	}
	src, err := st.Sources().Get(req.Name)
	if err != nil {
		return imageError(err)
	}
	return c.JSON(http.StatusCreated, src)
}

func (s *Server) removeImageSource(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	if err := st.Sources().Remove(c.Param("source")); err != nil {
		if errors.Is(err, catalog.ErrUnknownSource) {
			return apiErr(http.StatusNotFound, "%s", err)
		}
		return imageError(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listRemoteImages(c echo.Context) error {
	st, err := s.images()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), resolveTimeout)
	defer cancel()
	imgs, err := st.Remote(ctx, c.Param("source"))
	if err != nil {
		if errors.Is(err, catalog.ErrUnknownSource) {
			return apiErr(http.StatusNotFound, "%s", err)
		}
		return imageError(err)
	}
	if imgs == nil {
		imgs = []catalog.RemoteImage{}
	}
	return c.JSON(http.StatusOK, map[string]any{"images": imgs})
}
