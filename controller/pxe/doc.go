// Package pxe serves the network boot: a read-only TFTP server for the iPXE
// binaries that non-iPXE firmware fetches first, and the iPXE scripts that
// take over from there over HTTP: the generic boot.ipxe, which chains a
// per-MAC script, and the per-node scripts that boot the agent ramdisk or
// the local disk (reference/ironic.md §10).
//
// Script values come from operators and are checked against a strict
// character set rather than escaped; see CheckKernelParam and CheckURL.
package pxe
