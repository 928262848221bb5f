export const PROTOCOL_PLACEHOLDER = true;
