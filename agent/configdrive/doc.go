// Package configdrive writes an instance's config drive onto the disk the
// agent just imaged, as IPA's create_config_drive_partition does for
// whole-disk images: decode what the conductor sent ([Decode]), then put
// the image in a partition labelled by its filesystem "config-2", reusing
// one the image already has or adding one in the last 64 MiB of the disk
// ([Write]).
//
// Everything goes through the whole-disk device: no partition device
// nodes, no udev, no sgdisk or parted in the ramdisk.
//
// [Decode] and [Write] follow IPA 9.4 (partition_utils.get_configdrive and
// create_config_drive_partition); where they differ on purpose, their doc
// comments say so.
package configdrive
