export const NATIVE_PLACEHOLDER = true;
