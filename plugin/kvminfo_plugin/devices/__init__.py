"""The devices served: the inventory of slots, the pool that hands them out, the
allocation answers, device health, directory watching (inotify) and CDI specs."""
