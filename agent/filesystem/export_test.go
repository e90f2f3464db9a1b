package filesystem

// SetSbinDirs replaces the directories searched after $PATH and returns a
// function that restores them.
func SetSbinDirs(dirs []string) func() {
	old := sbinDirs
	sbinDirs = dirs
	return func() { sbinDirs = old }
}
