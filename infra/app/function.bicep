// The gateway itself: a Python 3.11 Function App on the Flex Consumption plan (FC1), running as the
// user-assigned identity, reachable only through the Application Gateway, and configured through the
// app settings below (the authoritative list is infra/app-settings.txt).

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the Function App (must offer Flex Consumption).')
param location string

@description('Tags applied to every resource; the Function App also gets azd-service-name.')
param tags object = {}

@description('Resource id of the Function App user-assigned identity.')
param identityId string

@description('Client id of the Function App user-assigned identity.')
param identityClientId string

@description('Name of the storage account for the host, the deployment packages and the gateway tables.')
param storageAccountName string

@description('Blob container holding the deployment packages.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Name of the Key Vault holding the SPN secret and the gateway keys (the code reads them by name via GATEWAY_KEYVAULT_URI).')
param keyVaultName string

@description('Resource id of the Application Gateway subnet, the only network allowed to call the app.')
param appGatewaySubnetId string

@description('Inline gateway configuration JSON (GATEWAY_CONFIG), built by gateway-config.bicep.')
param gatewayConfigJson string

@description('Tenant id of the SPN the gateway authenticates upstream with; empty uses the managed identity.')
param spnTenantId string = ''

@description('Application (client) id of that SPN; empty uses the managed identity.')
param spnClientId string = ''

@description('Name of the Key Vault secret holding the SPN client secret; empty uses the managed identity.')
param spnSecretName string = ''

@description('Tenant id whose Entra ID tokens inbound callers may present; empty accepts gateway keys only.')
param entraTenantId string = ''

@description('Audience (app id URI or client id) inbound Entra ID tokens must carry; empty accepts gateway keys only.')
param entraAudience string = ''

@description('App role inbound Entra ID tokens must carry; empty requires none.')
param entraRequiredRole string = ''

@description('NCRONTAB schedule (six fields, with seconds) of the health-probe timer function.')
param healthProbeSchedule string = '*/30 * * * * *'

@description('GATEWAY_KEY_REFRESH_SECONDS; empty leaves it unset (the gateway default).')
param keyRefreshSeconds string = ''

@description('GATEWAY_LEDGER_FLUSH_SECONDS; empty leaves it unset (the gateway default).')
param ledgerFlushSeconds string = ''

@description('GATEWAY_LEDGER_READ_SECONDS; empty leaves it unset (the gateway default).')
param ledgerReadSeconds string = ''

@description('GATEWAY_HEALTH_CACHE_SECONDS; empty leaves it unset (the gateway default).')
param healthCacheSeconds string = ''

@description('OTLP/HTTP endpoint for the gateway telemetry (OTEL_EXPORTER_OTLP_ENDPOINT); empty leaves it unset (off).')
param otlpEndpoint string = ''

@description('Most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Always-ready instances for the HTTP functions (0 = scale to zero; each one is billed while idle).')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Concurrent HTTP requests per instance. The gateway is async and I/O bound; Flex defaults Python apps to 1.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

var useSpn = !empty(spnClientId)

// App settings; the authoritative list of what the code reads is infra/app-settings.txt.
var baseSettings = [
  {
    // Required by the Python v2 model with HTTP streaming (azurefunctions-extensions-http-fastapi).
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
  {
    name: 'GATEWAY_CONFIG'
    value: gatewayConfigJson
  }
  {
    name: 'GATEWAY_TABLE_ENDPOINT'
    value: storage.properties.primaryEndpoints.table
  }
  {
    // DefaultAzureCredential picks the user-assigned identity named here.
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    // The code reads the SPN secret and the gateway keys (GATEWAY_CONFIG clients[].key_secrets) from this
    // vault by name, with the identity above; no app setting is a Key Vault reference.
    name: 'GATEWAY_KEYVAULT_URI'
    value: vault.properties.vaultUri
  }
  {
    name: 'GATEWAY_CREDENTIAL'
    value: useSpn ? 'spn' : 'managed-identity'
  }
  {
    name: 'GATEWAY_SPN_TENANT_ID'
    value: useSpn ? spnTenantId : ''
  }
  {
    name: 'GATEWAY_SPN_CLIENT_ID'
    value: spnClientId
  }
  {
    name: 'GATEWAY_SPN_SECRET_NAME'
    value: useSpn ? spnSecretName : ''
  }
  {
    name: 'GATEWAY_ENTRA_TENANT_ID'
    value: entraTenantId
  }
  {
    name: 'GATEWAY_ENTRA_AUDIENCE'
    value: entraAudience
  }
  {
    name: 'HEALTH_PROBE_SCHEDULE'
    value: healthProbeSchedule
  }
  {
    // Application Insights with Entra ID ingestion (local auth is disabled on the component).
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    // Identity-based host storage: no connection string, no account key.
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
]

// Set only when given: an absent setting keeps the gateway's own default (an empty one would be invalid).
var optionalSettings = [
  {
    name: 'GATEWAY_ENTRA_REQUIRED_ROLE'
    value: entraRequiredRole
  }
  {
    name: 'GATEWAY_KEY_REFRESH_SECONDS'
    value: keyRefreshSeconds
  }
  {
    name: 'GATEWAY_LEDGER_FLUSH_SECONDS'
    value: ledgerFlushSeconds
  }
  {
    name: 'GATEWAY_LEDGER_READ_SECONDS'
    value: ledgerReadSeconds
  }
  {
    name: 'GATEWAY_HEALTH_CACHE_SECONDS'
    value: healthCacheSeconds
  }
  {
    name: 'OTEL_EXPORTER_OTLP_ENDPOINT'
    value: otlpEndpoint
  }
]

// The whole list on every provision: ARM replaces appSettings, so nothing set by hand survives.
var appSettings = concat(baseSettings, filter(optionalSettings, setting => !empty(setting.value)))

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: Flex Consumption places instances itself; zone redundancy exists only in some regions and needs always-ready instances to matter.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_17: no client certificates: the Application Gateway is the only allowed caller (access restriction on its subnet).
  //checkov:skip=CKV_AZURE_222: the Application Gateway reaches the app on its public endpoint via a service endpoint; the access restriction denies every other network.
  //checkov:skip=CKV_AZURE_212: Flex Consumption scales to zero by design; set functionAlwaysReadyInstances for warm instances.
  //checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState (Learn: Flex Consumption plan deprecations); FTP is off through the ftp basicPublishingCredentialsPolicies below.
  //checkov:skip=CKV_AZURE_213: the Application Gateway probes the liveness endpoint /healthz; an App Service health check would add a second prober that recycles instances the gateway still uses to answer clear OpenAI-shaped errors.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // The balancer spreads load itself; an ARR affinity cookie would pin callers to one instance.
    clientAffinityEnabled: false
    // Flex Consumption rejects the siteConfig properties Learn lists as deprecated for it (ftpsState among
    // them); FTP is off through the ftp publishing-credentials policy below.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      // Only the Application Gateway subnet (Microsoft.Web service endpoint) may call the app.
      ipSecurityRestrictionsDefaultAction: 'Deny'
      ipSecurityRestrictions: [
        {
          name: 'AllowApplicationGateway'
          description: 'Application Gateway subnet (service endpoint Microsoft.Web)'
          action: 'Allow'
          priority: 100
          vnetSubnetResourceId: appGatewaySubnetId
        }
      ]
      // The scm (deployment) site keeps its own, open rules so that `azd deploy` works; it accepts
      // Entra ID tokens only (basic publishing credentials are disabled below).
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Allow'
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReadyInstances > 0 ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstances
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
