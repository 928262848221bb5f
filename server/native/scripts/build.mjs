// Placeholder: the addon build lands with the native helper issue.
console.log('vfio-user-native: nothing to build yet');
